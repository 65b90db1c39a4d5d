//! The base URL a request's absolute links are built on (`nextLink`s, long-running operation
//! status URLs, an event's request URL). ARM writes them on the host the client reached, so the
//! emulator writes them on the listener the request came in on (its scheme: an https request
//! gets https links) and on the host the client named in `Host`, when that is a loopback name.
//! Any other `Host` is ignored: the emulator only listens on loopback, and a link must lead back
//! to it.

use url::{Host, Url};

/// Marks a request with the base URL of the listener it came in on.
#[derive(Debug, Clone)]
pub(crate) struct ListenerBase(pub Url);

/// The base URL for links in the answer to a request that reached `listener` with `host` as its
/// `Host` header.
pub(crate) fn request_base(listener: &Url, host: Option<&str>) -> Url {
    host.and_then(|host| loopback_authority(listener.scheme(), host))
        .unwrap_or_else(|| listener.clone())
}

/// `scheme://host[:port]/` when `host` is a bare loopback authority (no user, path or query).
fn loopback_authority(scheme: &str, host: &str) -> Option<Url> {
    let url = Url::parse(&format!("{scheme}://{}/", host.trim())).ok()?;
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    let loopback = match url.host()? {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    };
    (bare && loopback).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn links_keep_the_scheme_and_port_of_the_listener_the_request_came_in_on() {
        let http = url("http://127.0.0.1:4000/");
        let https = url("https://127.0.0.1:4001/");
        assert_eq!(request_base(&http, Some("127.0.0.1:4000")), http);
        assert_eq!(request_base(&https, Some("127.0.0.1:4001")), https);
        assert_eq!(request_base(&https, None), https);
    }

    #[test]
    fn links_use_the_loopback_name_the_client_used() {
        let https = url("https://127.0.0.1:4001/");
        assert_eq!(
            request_base(&https, Some("localhost:4001")).as_str(),
            "https://localhost:4001/"
        );
        assert_eq!(
            request_base(&https, Some("[::1]:4001")).as_str(),
            "https://[::1]:4001/"
        );
    }

    #[test]
    fn a_foreign_or_malformed_host_is_ignored() {
        let https = url("https://127.0.0.1:4001/");
        for host in [
            "management.azure.com",
            "evil.example:4001",
            "user@localhost:4001",
            "localhost:4001/path",
            "localhost:notaport",
            "",
        ] {
            assert_eq!(request_base(&https, Some(host)), https, "{host}");
        }
    }
}
