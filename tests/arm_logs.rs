//! What the ARM client logs. A binary of its own: tracing caches per-callsite interest across
//! threads, so a subscriber scoped to one test misses events when other tests run beside it.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

/// Collects everything keysync logs, at every level, while the guard lives.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let buffer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("keysync=trace")
            .with_ansi(false)
            .with_writer(move || buffer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn retries_and_requests_are_logged_as_fields_without_urls_tokens_or_keys() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(503, arm_error("ServerBusy", "try later")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let mut body = sample("storage_StorageAccountListKeys");
    body["keys"][0]["value"] = json!("KEY-ONE-SECRET");
    body["keys"][1]["value"] = json!("KEY-TWO-SECRET");
    Mock::given(method("POST"))
        .respond_with(json_response(200, body))
        .mount(&server)
        .await;
    let logs = LogBuffer::default();

    let guard = logs.capture();
    client(&server).list_keys(&account()).await.unwrap();
    drop(guard);

    let text = logs.text();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("ARM request completed") && lines[0].contains("status=503"));
    assert!(lines[1].contains("WARN") && lines[1].contains("retrying ARM request"));
    for field in [
        "operation=StorageAccounts_ListKeys",
        "status=503",
        "code=\"ServerBusy\"",
        "attempt=1",
        "delay_ms=",
        &format!("resource={ACCOUNT}"),
    ] {
        assert!(lines[1].contains(field), "{field} missing: {}", lines[1]);
    }
    assert!(lines[2].contains("status=200") && lines[2].contains("attempt=2"));
    for secret in [
        "KEY-ONE-SECRET",
        "KEY-TWO-SECRET",
        TOKEN,
        "Bearer",
        "api-version",
        "try later",
    ] {
        assert!(!text.contains(secret), "{secret} logged: {text}");
    }
}

#[tokio::test]
async fn a_secret_quoted_back_by_a_failing_put_is_never_logged() {
    let server = MockServer::start().await;
    let busy = EchoSecret {
        status: 503,
        code: "ServiceUnavailable",
        echo: percent_decoded,
    };
    Mock::given(method("PUT"))
        .respond_with(busy)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let refused = EchoSecret {
        status: 400,
        code: "UserError",
        echo: |sent| sent.to_string(),
    };
    Mock::given(method("PUT"))
        .respond_with(refused)
        .mount(&server)
        .await;
    let current: keysync::model::ml::Datastore =
        serde_json::from_value(sample("aml_datastore_get")).unwrap();
    let body = current
        .with_sas_token(&secrecy::SecretString::from(SAS_TOKEN))
        .unwrap();
    let logs = LogBuffer::default();

    let guard = logs.capture();
    let err = client(&server)
        .put_datastore(&datastore(), &body)
        .await
        .unwrap_err();
    // What a caller logs of a failure is the error itself.
    tracing::error!(target: "keysync", error = %err, "datastore update failed");
    drop(guard);

    let text = logs.text();
    for piece in secret_pieces() {
        assert!(!text.contains(&piece), "{piece} logged: {text}");
    }
    let retry = text.lines().find(|l| l.contains("retrying ARM request"));
    let retry = retry.unwrap_or_else(|| panic!("no retry logged: {text}"));
    for field in [
        "operation=Datastores_CreateOrUpdate",
        "status=503",
        "code=\"ServiceUnavailable\"",
    ] {
        assert!(retry.contains(field), "{field} missing: {retry}");
    }
    assert!(text.contains("HTTP 400 UserError"), "{text}");
}
