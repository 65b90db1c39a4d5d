//! The storage check against a fake storage endpoint (`wiremock`): the request it sends, and how
//! it reads Azure's answers, including the ones Azurite never gives (a firewall's refusal, a busy
//! server, a file share).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use keysync::report::{CredentialUsed, VerifyOutcome};
use keysync::storage::shared_key::AccountKey;
use keysync::storage::verify::{Checker, Credential, DeadEndpoints, Service, Target};
use secrecy::SecretString;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "stcheck01";

/// base64("not a real key, only for the storage check tests")
const KEY: &str = "bm90IGEgcmVhbCBrZXksIG9ubHkgZm9yIHRoZSBzdG9yYWdlIGNoZWNrIHRlc3Rz";

fn key() -> AccountKey {
    AccountKey::new(ACCOUNT, &SecretString::from(KEY)).unwrap()
}

/// The `Authorization` header storage expects for `request`, worked out as storage does on its
/// side, from what arrived and without keysync's code: the string to sign of a Get Share
/// Properties with no standard headers (Shared Key, version 2015-02-21 and later), every `x-ms-`
/// header received, and the path-style resource, which names the account twice.
fn expected_authorization(request: &wiremock::Request) -> String {
    let standard = [
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
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().trim().to_string())
            .unwrap_or_default()
    };
    let mut to_sign = String::from("GET\n");
    for name in standard {
        let value = header(name);
        if !(name == "content-length" && value == "0") {
            to_sign.push_str(&value);
        }
        to_sign.push('\n');
    }
    let mut ms: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap().trim().to_string(),
            )
        })
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .collect();
    ms.sort();
    for (name, value) in ms {
        to_sign.push_str(&format!("{name}:{value}\n"));
    }
    assert_eq!(request.url.path(), format!("/{ACCOUNT}/share1"));
    assert_eq!(request.url.query(), Some("restype=share"));
    to_sign.push_str(&format!("/{ACCOUNT}/{ACCOUNT}/share1\nrestype:share"));

    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&STANDARD.decode(KEY).unwrap()).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {ACCOUNT}:{signature}")
}

fn target(server: &MockServer, service: Service, name: &str) -> Target {
    Target {
        service,
        endpoint: format!("{}/{ACCOUNT}/", server.uri()).parse().unwrap(),
        name: name.into(),
    }
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:0\nTime:2026-01-01T00:00:00Z</Message></Error>"
    );
    ResponseTemplate::new(status)
        .insert_header("x-ms-error-code", code)
        .set_body_string(body)
}

fn checker() -> Checker {
    Checker::new(Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn a_share_is_checked_with_a_signed_get_share_properties() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/{ACCOUNT}/share1")))
        .and(query_param("restype", "share"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let key = key();

    let v = checker()
        .check(
            &target(&server, Service::File, "share1"),
            Credential::Key(&key),
            &DeadEndpoints::default(),
        )
        .await;

    assert_eq!(v.outcome, VerifyOutcome::Verified, "{v:?}");
    assert_eq!(v.credential, CredentialUsed::AccountKey);
    assert!(
        v.detail.starts_with("Get Share Properties of 'share1'"),
        "{v:?}"
    );
    let request = &server.received_requests().await.unwrap()[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header("authorization"), expected_authorization(request));
    assert_eq!(header("x-ms-version"), keysync::storage::STORAGE_VERSION);
    let date = header("x-ms-date");
    assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
}

#[tokio::test]
async fn azure_refusals_are_told_apart_from_a_firewall_and_a_busy_server() {
    let server = MockServer::start().await;
    let cases = [
        (
            "bad",
            error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            ),
            VerifyOutcome::Rejected,
        ),
        (
            "walled",
            error(
                403,
                "AuthorizationFailure",
                "This request is not authorized to perform this operation.",
            ),
            VerifyOutcome::Unreachable,
        ),
        (
            "busy",
            error(503, "ServerBusy", "The server is busy."),
            VerifyOutcome::Inconclusive,
        ),
        (
            "gone",
            error(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
            ),
            VerifyOutcome::Verified,
        ),
        (
            "moved",
            ResponseTemplate::new(307).insert_header("location", "https://elsewhere.example/"),
            VerifyOutcome::Inconclusive,
        ),
    ];
    for (name, answer, _) in &cases {
        Mock::given(path(format!("/{ACCOUNT}/{name}")))
            .respond_with(answer.clone())
            .mount(&server)
            .await;
    }
    let key = key();
    for (name, _, expected) in cases {
        let v = checker()
            .check(
                &target(&server, Service::Blob, name),
                Credential::Key(&key),
                &DeadEndpoints::default(),
            )
            .await;
        assert_eq!(v.outcome, expected, "{name}: {v:?}");
    }
    // The redirect was not followed.
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_sas_check_sends_the_token_and_no_detail_ever_shows_it() {
    let server = MockServer::start().await;
    Mock::given(query_param("comp", "list"))
        .and(query_param("sig", "c2VjcmV0LXNpZw=="))
        .respond_with(error(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ))
        .mount(&server)
        .await;
    let token =
        SecretString::from("sv=2024-11-04&sr=c&sp=r&se=2099-01-01&sig=c2VjcmV0LXNpZw%3D%3D");

    let v = checker()
        .check(
            &target(&server, Service::Blob, "data"),
            Credential::Sas(&token),
            &DeadEndpoints::default(),
        )
        .await;

    assert_eq!(v.outcome, VerifyOutcome::Verified, "{v:?}");
    assert_eq!(v.code.as_deref(), Some("AuthorizationPermissionMismatch"));
    assert!(v.detail.contains("List Blobs"), "{v:?}");

    // A refused connection names the failure, never the URL that carries the token.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere = Target {
        service: Service::Blob,
        endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}/")
            .parse()
            .unwrap(),
        name: "data".into(),
    };
    let v = checker()
        .check(&nowhere, Credential::Sas(&token), &DeadEndpoints::default())
        .await;
    assert_eq!(v.outcome, VerifyOutcome::Unreachable, "{v:?}");
    let shown = format!("{v:?}");
    assert!(
        !shown.contains("c2VjcmV0") && !shown.contains("sig="),
        "{shown}"
    );
}

#[tokio::test]
async fn no_check_starts_after_the_runs_deadline() {
    let server = MockServer::start().await;
    let key = key();
    let past = tokio::time::Instant::now();

    let v = checker()
        .until(Some(past))
        .check(
            &target(&server, Service::Blob, "data"),
            Credential::Key(&key),
            &DeadEndpoints::default(),
        )
        .await;

    assert_eq!(v.outcome, VerifyOutcome::NotChecked, "{v:?}");
    assert!(v.detail.contains("deadline"), "{v:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
