//! Paging of list operations: opaque continuation tokens and absolute `nextLink`s, so that a
//! client has to follow the link it was given rather than build its own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use url::{Url, form_urlencoded};

const TOKEN_PREFIX: &str = "keysync-emulator-page:";

/// An opaque token for "continue at item `offset`".
pub(crate) fn mint_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{offset}"))
}

/// The offset a token stands for; `None` for a token this emulator did not mint.
pub(crate) fn read_token(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(TOKEN_PREFIX)?.parse().ok()
}

/// One page of a list.
pub(crate) struct Page {
    pub items: Vec<Value>,
    /// The offset of the next page, when there is one.
    pub next: Option<usize>,
}

/// Cuts the page of `size` items starting at `start`.
pub(crate) fn cut(items: Vec<Value>, start: usize, size: usize) -> Page {
    let total = items.len();
    let end = start.saturating_add(size).min(total);
    let items = items.into_iter().skip(start).take(size).collect();
    Page {
        items,
        next: (end < total).then_some(end),
    }
}

/// The body of a list answer: `value`, plus `nextLink` when there is a next page.
pub(crate) fn body(items: Vec<Value>, next_link: Option<String>) -> Value {
    match next_link {
        Some(link) => json!({ "value": items, "nextLink": link }),
        None => json!({ "value": items }),
    }
}

/// An absolute URL on the emulator: `base` + `path` with `params`, as a `nextLink` or a
/// status URL. Parameter names are written as they are (ARM writes `$skipToken`, not `%24skipToken`);
/// values are encoded.
pub(crate) fn absolute_url(base: &Url, path: &str, params: &[(&str, String)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(name, value)| {
            let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            format!("{name}={value}")
        })
        .collect();
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(Some(&query.join("&")));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        assert_eq!(read_token(&mint_token(42)), Some(42));
        assert_eq!(read_token("42"), None);
        assert_eq!(read_token("!!"), None);
    }

    #[test]
    fn pages_cover_the_list_once() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = cut(items.clone(), 0, 2);
        assert_eq!(first.items, vec![json!(0), json!(1)]);
        assert_eq!(first.next, Some(2));
        let last = cut(items.clone(), 4, 2);
        assert_eq!(last.items, vec![json!(4)]);
        assert_eq!(last.next, None);
        assert!(cut(items, 9, 2).items.is_empty());
    }

    #[test]
    fn next_links_are_absolute_with_the_given_parameters() {
        let base = Url::parse("http://127.0.0.1:8080").unwrap();
        let link = absolute_url(
            &base,
            "/subscriptions/s/providers/Microsoft.MachineLearningServices/workspaces",
            &[
                ("api-version", "2025-12-01".into()),
                ("$skipToken", "abc".into()),
            ],
        );
        assert_eq!(
            link,
            "http://127.0.0.1:8080/subscriptions/s/providers/Microsoft.MachineLearningServices/workspaces?api-version=2025-12-01&$skipToken=abc"
        );
    }
}
