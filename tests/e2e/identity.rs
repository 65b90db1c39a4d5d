//! A managed identity endpoint that accepts and never answers, refuses connections or drops them:
//! the real credential, in the real binary, gives up within the request timeout or the
//! invocation's deadline, and the error names the endpoint's variable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keysync::emulator::Scenario;
use tokio::net::TcpListener;

use crate::helpers::*;

/// What a listener does with each connection it accepts.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Holds it open without a byte of answer.
    Silent,
    /// Closes it at once.
    Drop,
    /// Refuses the request with this status and a body that quotes its `X-IDENTITY-HEADER`, as
    /// a careless identity endpoint might.
    Quote(u16),
}

/// A loopback identity endpoint that behaves as told, and the connections it accepted.
async fn identity_endpoint(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            match behaviour {
                Behaviour::Silent => held.push(connection),
                Behaviour::Drop => drop(connection),
                Behaviour::Quote(status) => {
                    tokio::spawn(quote_the_header(connection, status));
                }
            }
        }
    });
    (format!("http://127.0.0.1:{port}/msi/token"), accepted)
}

/// Reads one request and answers `status` with a JSON body that repeats its identity header.
async fn quote_the_header(mut connection: tokio::net::TcpStream, status: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match connection.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let header = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-identity-header"))
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let body = format!(
        r#"{{"error": "invalid_request", "message": "Invalid X-IDENTITY-HEADER {header} in the request"}}"#
    );
    let answer = format!(
        "HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = connection.write_all(answer.as_bytes()).await;
}

/// An identity endpoint URL on a port nothing listens on.
fn refusing_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/msi/token")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `keysync plan --account stmlshared01` against the emulator with `overrides`: its exit
/// code, everything it printed, and how long it took.
async fn plan(app: &TestApp, overrides: &[(&str, &str)]) -> (i32, String, Duration) {
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(["plan", "--account", "stmlshared01"])
        .env_clear()
        .envs(app.emulator.env())
        .envs(env(overrides))
        .output()
        .await
        .expect("keysync runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap(), printed, started.elapsed())
}

#[tokio::test]
async fn an_identity_endpoint_that_never_answers_fails_the_event_by_its_deadline() {
    let (endpoint, accepted) = identity_endpoint(Behaviour::Silent).await;
    let options = Options {
        // The request timeout (30 s by default) is longer than the deadline: the deadline decides.
        extra_env: env(&[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("KEYSYNC_EVENT_DEADLINE_SECS", "2"),
        ]),
        ..Options::default()
    };
    let app = TestApp::start_with(Scenario::demo(), options).await;

    let started = Instant::now();
    let record = app.deliver(&regeneration_event(SHARED)).await;

    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}"
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the endpoint was asked"
    );
    assert!(!record.succeeded(), "{:#}", record.body);
    let stderr = app.host.handler_output().join("\n");
    assert!(
        stderr.contains("the credential did not answer before the deadline")
            && stderr.contains("IDENTITY_ENDPOINT"),
        "{stderr}"
    );
    assert!(app.writes().is_empty());
}

#[tokio::test]
async fn plan_gives_up_on_a_silent_identity_endpoint_after_one_request_timeout() {
    let app = TestApp::start(Scenario::demo()).await;
    let (endpoint, _) = identity_endpoint(Behaviour::Silent).await;

    let (code, printed, elapsed) = plan(
        &app,
        &[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("KEYSYNC_REQUEST_TIMEOUT_SECS", "1"),
        ],
    )
    .await;

    assert_eq!(code, 1, "{printed}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(
        printed.contains("the credential did not answer within 1.0s")
            && printed.contains("IDENTITY_ENDPOINT"),
        "{printed}"
    );
}

#[tokio::test]
async fn plan_gives_up_on_a_refusing_identity_endpoint_after_a_few_quick_attempts() {
    let app = TestApp::start(Scenario::demo()).await;
    let endpoint = refusing_endpoint();

    let (code, printed, elapsed) = plan(
        &app,
        &[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("KEYSYNC_REQUEST_TIMEOUT_SECS", "1"),
        ],
    )
    .await;

    assert_eq!(code, 1, "{printed}");
    // Three attempts and two backoff waits of at most a second and two.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        printed.contains("the credential could not be reached (3 attempts)")
            && printed.contains("IDENTITY_ENDPOINT")
            && printed.contains("Connection refused"),
        "{printed}"
    );
}

#[tokio::test]
async fn each_token_attempt_is_one_request_to_the_identity_endpoint() {
    let app = TestApp::start(Scenario::demo()).await;
    let (endpoint, accepted) = identity_endpoint(Behaviour::Drop).await;

    let (code, printed, _) = plan(&app, &[("IDENTITY_ENDPOINT", &endpoint)]).await;

    assert_eq!(code, 1, "{printed}");
    // `plan --account` lists the accounts first, and stops when that fails: one token request,
    // three attempts, and none retried again inside the credential.
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "{printed}");
    let header = app
        .emulator
        .env()
        .into_iter()
        .find(|(k, _)| k == "IDENTITY_HEADER");
    assert!(!printed.contains(&header.unwrap().1), "{printed}");
}

#[tokio::test]
async fn an_identity_endpoint_quoting_the_identity_header_does_not_get_it_printed() {
    let app = TestApp::start(Scenario::demo()).await;
    let header = "TopSecretIdentityHeaderValue987";
    for status in [400, 403, 500] {
        let (endpoint, accepted) = identity_endpoint(Behaviour::Quote(status)).await;

        let (code, printed, _) = plan(
            &app,
            &[
                ("IDENTITY_ENDPOINT", &endpoint),
                ("IDENTITY_HEADER", header),
                ("RUST_LOG", "trace"),
            ],
        )
        .await;

        assert_eq!(code, 1, "{printed}");
        assert!(accepted.load(Ordering::SeqCst) >= 1);
        assert!(printed.contains("no token for"), "{status}: {printed}");
        assert!(
            !printed.contains(header),
            "{status}: the identity header was printed"
        );
        assert!(
            !printed.contains("HeaderValue98"),
            "{status}: part of it was printed"
        );
    }
}
