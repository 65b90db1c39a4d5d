//! Query strings as ARM reads them: parameter names ignore case, and a parameter may repeat.

use url::form_urlencoded;

/// The decoded parameters of a query string, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a raw query string (without the `?`).
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        Query(pairs)
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// A boolean parameter: `Ok(None)` when absent, `Err` with the raw value when it is
    /// neither `true` nor `false`.
    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(v.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ignore_case_and_values_are_decoded() {
        let q = Query::parse(Some(
            "API-Version=2025-12-01&names=a&Names=b%20c&skipValidation=TRUE",
        ));
        assert_eq!(q.get("api-version"), Some("2025-12-01"));
        assert_eq!(q.all("names").collect::<Vec<_>>(), vec!["a", "b c"]);
        assert_eq!(q.flag("skipValidation"), Ok(Some(true)));
        assert_eq!(q.flag("isDefault"), Ok(None));
        assert!(
            Query::parse(Some("isDefault=yes"))
                .flag("isDefault")
                .is_err()
        );
    }
}
