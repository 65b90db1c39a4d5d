//! Shared Key authorization of Blob and File service requests: the string a request is signed
//! over, and its HMAC-SHA256 signature with the account key.
//!
//! The string to sign (service versions 2015-02-21 and later) is, one line each: the verb; the
//! values of `Content-Encoding`, `Content-Language`, `Content-Length` (empty when zero),
//! `Content-MD5`, `Content-Type`, `Date`, `If-Modified-Since`, `If-Match`, `If-None-Match`,
//! `If-Unmodified-Since` and `Range`, each empty when the header is absent; then the
//! canonicalized headers, then the canonicalized resource:
//!
//! - **canonicalized headers**: every `x-ms-` header, its name in lower case, sorted by name,
//!   its value trimmed and with inner runs of whitespace folded to one space, each written as
//!   `name:value\n`;
//! - **canonicalized resource**: `/`, the account name and the URL's path as sent (`/` when
//!   empty); then each query parameter, its name in lower case, sorted by name, its values
//!   decoded, sorted and joined with `,`, each written as `\nname:values`.
//!
//! A path-style URL, which emulators such as Azurite serve
//! (`http://127.0.0.1:10000/<account>/<container>`), already starts its path with the account, so
//! the account appears twice: `/<account>/<account>/<container>`.
//!
//! The header is `Authorization: SharedKey <account>:<base64 signature>`.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use url::Url;
use zeroize::Zeroizing;

/// The standard headers of the string to sign, in their order.
const SIGNED_STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// An account key that is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the account key is not base64")]
pub struct InvalidKey;

/// A storage account's name and decoded key, ready to sign. `Debug` shows the name only; the key
/// (and every clone of it) is zeroed on drop.
#[derive(Clone)]
pub struct AccountKey {
    account: String,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKey({}, ..)", self.account)
    }
}

impl AccountKey {
    /// Decodes `key` (base64, as `listKeys` returns it) for `account`.
    pub fn new(account: &str, key: &SecretString) -> Result<Self, InvalidKey> {
        let encoded = key.expose_secret().trim();
        // Room for the longest result up front: a buffer that grew would leave a copy behind.
        let room = base64::decoded_len_estimate(encoded.len());
        let mut key = Zeroizing::new(Vec::with_capacity(room));
        STANDARD
            .decode_vec(encoded, &mut key)
            .map_err(|_| InvalidKey)?;
        Ok(AccountKey {
            account: account.to_string(),
            key,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The base64 HMAC-SHA256 of `message` under this key. The result is a secret. The MAC's
    /// state, derived from the key, is zeroed on drop (the `zeroize` features of hmac and sha2).
    pub(crate) fn sign(&self, message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(message.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// The `Authorization` header value for a request: `SharedKey <account>:<signature>`.
///
/// `headers` are every header the request will carry (name, value); the signature covers the
/// standard ones listed above and every `x-ms-` header.
pub fn authorization(
    key: &AccountKey,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
) -> String {
    let signature = key.sign(&string_to_sign(key.account(), method, url, headers));
    format!("SharedKey {}:{signature}", key.account())
}

/// The string a request is signed over (see the module documentation).
pub fn string_to_sign(account: &str, method: &str, url: &Url, headers: &[(&str, &str)]) -> String {
    let mut out = method.to_ascii_uppercase();
    out.push('\n');
    for name in SIGNED_STANDARD_HEADERS {
        let value = header(headers, name).unwrap_or_default();
        // Since 2015-02-21 a zero Content-Length is signed as empty.
        if !(name == "content-length" && value == "0") {
            out.push_str(value);
        }
        out.push('\n');
    }
    out.push_str(&canonicalized_headers(headers));
    out.push_str(&canonicalized_resource(account, url));
    out
}

fn header<'a>(headers: &'a [(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Every `x-ms-` header as `name:value\n`, sorted by lower-case name.
pub fn canonicalized_headers(headers: &[(&str, &str)]) -> String {
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), fold(value)))
        .filter(|(name, _)| name.starts_with("x-ms-"))
        .collect();
    ms.sort();
    ms.iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect()
}

/// Trims a header value and folds each inner run of whitespace to one space.
fn fold(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `/<account><path>` and then `\nname:values` per query parameter, sorted by name.
pub fn canonicalized_resource(account: &str, url: &Url) -> String {
    let path = match url.path() {
        "" => "/",
        path => path,
    };
    let mut out = format!("/{account}{path}");
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        out.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `base64("keysync shared key test vector, not a real key!!!")`.
    const KEY: &str = "a2V5c3luYyBzaGFyZWQga2V5IHRlc3QgdmVjdG9yLCBub3QgYSByZWFsIGtleSEhIQ==";

    fn key() -> AccountKey {
        AccountKey::new("stvector01", &SecretString::from(KEY)).unwrap()
    }

    const HEADERS: [(&str, &str); 3] = [
        ("x-ms-version", "2024-11-04"),
        ("x-ms-date", "Tue, 03 Mar 2026 10:00:00 GMT"),
        (
            "x-ms-client-request-id",
            "  0f8fad5b-d9cb-469f-a165-70867728950e  ",
        ),
    ];

    /// Written by hand from the documented rules: eleven empty standard headers, the `x-ms-`
    /// headers sorted and trimmed, the account and path, and the query parameter.
    const GET_CONTAINER_PROPERTIES: &str = "GET\n\n\n\n\n\n\n\n\n\n\n\n\
        x-ms-client-request-id:0f8fad5b-d9cb-469f-a165-70867728950e\n\
        x-ms-date:Tue, 03 Mar 2026 10:00:00 GMT\n\
        x-ms-version:2024-11-04\n\
        /stvector01/data\nrestype:container";

    #[test]
    fn the_string_to_sign_follows_the_documented_layout() {
        let url =
            Url::parse("https://stvector01.blob.core.windows.net/data?restype=container").unwrap();
        assert_eq!(
            string_to_sign("stvector01", "GET", &url, &HEADERS),
            GET_CONTAINER_PROPERTIES
        );
    }

    #[test]
    fn the_signature_matches_a_vector_computed_outside_the_crate() {
        // `printf '%s' "$STRING_TO_SIGN" | openssl dgst -sha256 -mac HMAC \
        //   -macopt hexkey:<the key's bytes in hex> -binary | base64`
        let url =
            Url::parse("https://stvector01.blob.core.windows.net/data?restype=container").unwrap();
        assert_eq!(
            authorization(&key(), "GET", &url, &HEADERS),
            "SharedKey stvector01:1tKbovT0B5VavEudguJtpCQiN22LhEj1tPdF/eKXdd0="
        );
    }

    #[test]
    fn a_path_style_url_repeats_the_account_and_parameters_are_sorted_and_joined() {
        let url = Url::parse(
            "http://127.0.0.1:10000/stvector01/data?restype=container&COMP=list&include=metadata&include=deleted",
        )
        .unwrap();
        assert_eq!(
            canonicalized_resource("stvector01", &url),
            "/stvector01/stvector01/data\ncomp:list\ninclude:deleted,metadata\nrestype:container"
        );
    }

    #[test]
    fn a_file_share_request_signs_its_share_and_a_zero_length_is_empty() {
        let headers = [
            ("Content-Length", "0"),
            ("x-ms-date", "Tue, 03 Mar 2026 10:00:00 GMT"),
            ("x-ms-version", "2024-11-04"),
        ];
        let url =
            Url::parse("https://stvector01.file.core.windows.net/share1?restype=share").unwrap();
        let expected = "GET\n\n\n\n\n\n\n\n\n\n\n\n\
            x-ms-date:Tue, 03 Mar 2026 10:00:00 GMT\n\
            x-ms-version:2024-11-04\n\
            /stvector01/share1\nrestype:share";
        assert_eq!(
            string_to_sign("stvector01", "GET", &url, &headers),
            expected
        );
        assert_eq!(
            authorization(&key(), "GET", &url, &headers),
            "SharedKey stvector01:mjQn4+smMenj9OkC01M73loC8Q7zxL23a1B7syisNsU="
        );
    }

    #[test]
    fn header_values_are_folded_and_names_lowered() {
        let headers = [("X-MS-Meta-Note", "  two   words\there "), ("Accept", "x")];
        assert_eq!(
            canonicalized_headers(&headers),
            "x-ms-meta-note:two words here\n"
        );
    }

    #[test]
    fn the_decoded_key_fits_the_room_made_for_it() {
        let key = key();
        assert_eq!(
            &key.key[..],
            b"keysync shared key test vector, not a real key!!!"
        );
        assert_eq!(key.key.capacity(), base64::decoded_len_estimate(KEY.len()));
    }

    #[test]
    fn a_key_that_is_not_base64_is_refused_and_debug_hides_it() {
        assert!(AccountKey::new("a", &SecretString::from("not base64!")).is_err());
        assert_eq!(format!("{:?}", key()), "AccountKey(stvector01, ..)");
    }
}
