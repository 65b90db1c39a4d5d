//! The storage check against a fake storage endpoint (`wiremock`): the request it sends, and how
//! it reads Azure's answers, including the ones Azurite never gives (a firewall's refusal, a busy
//! server, a file share).

use std::time::Duration;

use keysync::report::{CredentialUsed, VerifyOutcome};
use keysync::storage::shared_key::AccountKey;
use keysync::storage::verify::{Checker, Credential, DeadEndpoints, Service, Target};
use secrecy::SecretString;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "stcheck01";

fn key() -> AccountKey {
    // base64("not a real key, only for the storage check tests")
    let key =
        SecretString::from("bm90IGEgcmVhbCBrZXksIG9ubHkgZm9yIHRoZSBzdG9yYWdlIGNoZWNrIHRlc3Rz");
    AccountKey::new(ACCOUNT, &key).unwrap()
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
    assert!(header("authorization").starts_with(&format!("SharedKey {ACCOUNT}:")));
    assert_eq!(header("x-ms-version"), keysync::storage::STORAGE_VERSION);
    assert!(header("x-ms-date").ends_with(" GMT"));
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
