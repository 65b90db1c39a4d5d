//! The ARM client against a wiremock ARM: each operation's request, paging, retries, long-running
//! operations, errors and the concurrency limit. Mock answers are Azure's published samples.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use common::*;
use keysync::arm::{ArmClient, ArmErrorKind, Operation};
use keysync::model::ml::DatastoreBody;
use keysync::model::storage::KeySlot;
use keysync::reconcile::execute;
use keysync::report::Outcome;
use keysync::resource_id::WorkspaceId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;
use wiremock::matchers::{body_bytes, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

// ---- each operation: method, path, api-version, body -------------------------------------------

#[tokio::test]
async fn get_storage_account_reads_the_sample() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ACCOUNT))
        .and(query_param("api-version", STORAGE_VERSION))
        .respond_with(json_response(
            200,
            sample("storage_StorageAccountGetProperties"),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let found = client(&server)
        .get_storage_account(&account())
        .await
        .unwrap();

    assert_eq!(found.name, "sto8596");
    assert_eq!(found.key_creation_time().newest(), KeySlot::Key1);
    assert_common_headers(&received(&server).await);
}

#[tokio::test]
async fn list_keys_posts_without_body_or_kerberos_expansion() {
    let server = MockServer::start().await;
    let mut body = sample("storage_StorageAccountListKeys");
    body["keys"][0]["value"] = json!("secret-one");
    body["keys"][1]["value"] = json!("secret-two");
    Mock::given(method("POST"))
        .and(path(format!("{ACCOUNT}/listKeys")))
        .respond_with(json_response(200, body))
        .expect(1)
        .mount(&server)
        .await;

    let keys = client(&server).list_keys(&account()).await.unwrap();

    assert_eq!(keys.key1.expose_secret(), "secret-one");
    assert_eq!(keys.key2.expose_secret(), "secret-two");
    let requests = received(&server).await;
    assert_eq!(
        requests[0].url.query(),
        Some("api-version=2025-08-01"),
        "no $expand=kerb"
    );
    assert!(requests[0].body.is_empty());
    assert_eq!(requests[0].headers["content-length"], "0");
    assert_common_headers(&requests);
}

#[tokio::test]
async fn regenerate_key_names_the_key_in_a_json_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{ACCOUNT}/regenerateKey")))
        .and(query_param("api-version", STORAGE_VERSION))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"keyName": "key2"})))
        .respond_with(json_response(
            200,
            sample("storage_StorageAccountRegenerateKey"),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let keys = client(&server)
        .regenerate_key(&account(), KeySlot::Key2)
        .await
        .unwrap();

    assert_eq!(keys.key2.expose_secret(), "<value>");
}

#[tokio::test]
async fn list_storage_accounts_reads_one_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts"
        )))
        .and(query_param("api-version", STORAGE_VERSION))
        .respond_with(json_response(200, sample("storage_StorageAccountList")))
        .expect(1)
        .mount(&server)
        .await;

    let accounts = client(&server).list_storage_accounts(SUB).await.unwrap();

    assert_eq!(accounts.len(), 6);
    assert_eq!(accounts[0].name, "sto1125");
}

#[tokio::test]
async fn get_workspace_reads_the_sample() {
    let server = MockServer::start().await;
    let id = WorkspaceId::parse(
        "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/testworkspace",
    )
    .unwrap();
    Mock::given(method("GET"))
        .and(path(id.as_str()))
        .and(query_param("api-version", ML_VERSION))
        .respond_with(json_response(200, sample("aml_workspace_get")))
        .expect(1)
        .mount(&server)
        .await;

    let found = client(&server).get_workspace(&id).await.unwrap();

    assert_eq!(found.name, "testworkspace");
    assert!(found.properties.storage_account.is_some());
}

#[tokio::test]
async fn list_datastores_asks_for_the_largest_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{WORKSPACE}/datastores")))
        .and(query_param("api-version", ML_VERSION))
        .and(query_param("count", "100"))
        .respond_with(json_response(200, page("aml_datastore_list", None)))
        .expect(1)
        .mount(&server)
        .await;

    let found = client(&server).list_datastores(&workspace()).await.unwrap();

    assert_eq!(found.len(), 1);
    assert_eq!(found[0].datastore_type(), Some("AzureBlob"));
}

#[tokio::test]
async fn get_datastore_reads_the_sample() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(datastore().as_str()))
        .and(query_param("api-version", ML_VERSION))
        .respond_with(json_response(200, sample("aml_datastore_get")))
        .expect(1)
        .mount(&server)
        .await;

    let found = client(&server).get_datastore(&datastore()).await.unwrap();

    assert_eq!(found.endpoint(), Some("core.windows.net"));
}

#[tokio::test]
async fn put_datastore_sends_the_body_as_is() {
    let server = MockServer::start().await;
    let current: keysync::model::ml::Datastore =
        serde_json::from_value(sample("aml_datastore_get")).unwrap();
    let body: DatastoreBody = current
        .with_account_key(&SecretString::from("new-key"))
        .unwrap();
    Mock::given(method("PUT"))
        .and(path(datastore().as_str()))
        .and(query_param("api-version", ML_VERSION))
        .and(header("content-type", "application/json"))
        .and(body_bytes(body.to_json().unwrap().to_vec()))
        .respond_with(json_response(
            200,
            sample("aml_datastore_AzureBlobWAccountKey_createOrUpdate"),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let stored = client(&server)
        .put_datastore(&datastore(), &body)
        .await
        .unwrap();

    assert_eq!(stored.account_name(), Some("string"));
}

#[tokio::test]
async fn list_datastore_secrets_posts_and_keeps_the_key_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{}/listSecrets", datastore())))
        .and(query_param("api-version", ML_VERSION))
        .respond_with(json_response(200, sample("aml_datastore_listSecrets")))
        .expect(1)
        .mount(&server)
        .await;

    let secrets = client(&server)
        .list_datastore_secrets(&datastore())
        .await
        .unwrap();

    assert_eq!(secrets.secrets_type.as_deref(), Some("AccountKey"));
    assert_eq!(secrets.key.as_ref().unwrap().expose_secret(), "string");
    assert!(!format!("{secrets:?}").contains("string\""));
}

#[tokio::test]
async fn resync_keys_done_at_once_on_200() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{WORKSPACE}/resyncKeys")))
        .and(query_param("api-version", ML_VERSION))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    client(&server).resync_keys(&workspace()).await.unwrap();
}

// ---- paging -----------------------------------------------------------------------------------

#[tokio::test]
async fn list_workspaces_follows_absolute_next_links_unchanged() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let list =
        format!("/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces");
    let page2 = format!("{uri}{list}?api-version={ML_VERSION}&$skipToken=p2");
    let page3 = format!("{uri}{list}?api-version={ML_VERSION}&$skipToken=p3");
    for (token, next) in [
        (None, Some(page2)),
        (Some("p2"), Some(page3)),
        (Some("p3"), None),
    ] {
        let mut mock = Mock::given(method("GET")).and(path(list.as_str()));
        if let Some(token) = token {
            mock = mock.and(query_param("$skipToken", token));
        }
        mock.respond_with(json_response(200, page("aml_listBySubscription", next)))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }

    let found = client(&server).list_workspaces(SUB).await.unwrap();

    assert_eq!(found.len(), 6);
    let requests = received(&server).await;
    let queries: Vec<_> = requests.iter().map(|r| r.url.query().unwrap()).collect();
    assert_eq!(
        queries,
        [
            "api-version=2025-12-01",
            "api-version=2025-12-01&$skipToken=p2",
            "api-version=2025-12-01&$skipToken=p3",
        ]
    );
    assert_common_headers(&requests);
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_without_sending_the_token() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let next = format!("{}/steal?api-version={ML_VERSION}", elsewhere.uri());
    Mock::given(method("GET"))
        .respond_with(json_response(
            200,
            page("aml_listBySubscription", Some(next)),
        ))
        .mount(&server)
        .await;

    let err = client(&server).list_workspaces(SUB).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Decode);
    assert!(err.message.contains("nextLink"), "{err}");
    assert!(received(&elsewhere).await.is_empty());
}

#[tokio::test]
async fn a_next_link_loop_is_stopped() {
    let server = MockServer::start().await;
    let list = format!("{WORKSPACE}/datastores");
    let again = format!(
        "{}{list}?api-version={ML_VERSION}&$skipToken=same",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path(list.as_str()))
        .respond_with(json_response(200, page("aml_datastore_list", Some(again))))
        .mount(&server)
        .await;

    let err = client(&server)
        .list_datastores(&workspace())
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Decode);
    assert!(err.message.contains("loop"), "{err}");
    assert_eq!(received(&server).await.len(), 2);
}

// ---- retries ----------------------------------------------------------------------------------

/// Answers the first request 429 with the `Retry-After` that `retry_after` writes for the time
/// it arrived, then the sample; records when each request arrived.
struct Throttled {
    arrivals: Arc<Mutex<Vec<SystemTime>>>,
    retry_after: fn(SystemTime) -> String,
}

impl Respond for Throttled {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let now = SystemTime::now();
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(now);
        match arrivals.len() {
            1 => ResponseTemplate::new(429).insert_header("Retry-After", (self.retry_after)(now)),
            _ => json_response(200, sample("aml_datastore_get")),
        }
    }
}

/// When each request of a `get_datastore` that was throttled once arrived.
async fn throttled_once(retry_after: fn(SystemTime) -> String) -> Vec<SystemTime> {
    let server = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("GET"))
        .respond_with(Throttled {
            arrivals: Arc::clone(&arrivals),
            retry_after,
        })
        .mount(&server)
        .await;

    client(&server).get_datastore(&datastore()).await.unwrap();

    assert_common_headers(&received(&server).await);
    arrivals.lock().unwrap().clone()
}

/// Clock readings on both sides of the wait differ by a little more than the wait.
const CLOCK_SLACK: Duration = Duration::from_millis(20);

#[tokio::test]
async fn throttling_with_retry_after_seconds_is_waited_out() {
    let arrivals = throttled_once(|_| "2".to_string()).await;

    assert_eq!(arrivals.len(), 2);
    // The client's own backoff is 1 ms: only Retry-After explains a wait of 2 s.
    let waited = arrivals[1].duration_since(arrivals[0]).unwrap_or_default();
    assert!(waited + CLOCK_SLACK >= Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn throttling_with_an_http_date_retry_after_is_waited_out() {
    // A date has whole seconds: 3 s ahead, cut to the second, is between 2 and 3 s ahead.
    let at = |now: SystemTime| httpdate::fmt_http_date(now + Duration::from_secs(3));
    let arrivals = throttled_once(at).await;

    assert_eq!(arrivals.len(), 2);
    let named = httpdate::parse_http_date(&at(arrivals[0])).unwrap();
    assert!(named >= arrivals[0] + Duration::from_secs(2));
    // The retry came no earlier than the date the 429 named.
    assert!(
        arrivals[1] + CLOCK_SLACK >= named,
        "retried {:?} before the date named",
        named.duration_since(arrivals[1]).unwrap_or_default()
    );
}

fn gateway_page() -> ResponseTemplate {
    let html = format!(
        "<html><head><title>503 Service Unavailable</title></head><body>{}</body></html>",
        "<p>The gateway is busy.</p>".repeat(40)
    );
    ResponseTemplate::new(503)
        .set_body_raw(html, "text/html")
        .insert_header("x-ms-correlation-request-id", "corr-503")
}

#[tokio::test]
async fn a_gateway_html_503_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(gateway_page())
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(json_response(200, sample("aml_workspace_get")))
        .mount(&server)
        .await;

    let found = client(&server).get_workspace(&workspace()).await.unwrap();

    assert_eq!(found.name, "testworkspace");
    assert_eq!(received(&server).await.len(), 2);
}

#[tokio::test]
async fn a_503_that_never_ends_fails_with_status_and_correlation_id_but_no_html() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(gateway_page())
        .mount(&server)
        .await;

    let err = client(&server)
        .get_workspace(&workspace())
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Status);
    assert_eq!(err.status, Some(503));
    assert_eq!(err.correlation_id.as_deref(), Some("corr-503"));
    assert!(
        err.message.starts_with("non-JSON error body (text/html, "),
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        !shown.contains('<') && !shown.contains("gateway"),
        "{shown}"
    );
    assert_eq!(received(&server).await.len(), 1 + settings().max_retries);
}

#[tokio::test]
async fn not_found_is_not_retried_and_keeps_arm_code() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            json_response(
                404,
                arm_error("ResourceNotFound", "The Resource was not found."),
            )
            .insert_header("x-ms-request-id", "req-404"),
        )
        .mount(&server)
        .await;

    let err = client(&server)
        .get_datastore(&datastore())
        .await
        .unwrap_err();

    assert!(err.is_not_found());
    assert_eq!(err.code.as_deref(), Some("ResourceNotFound"));
    assert_eq!(err.operation, Operation::DatastoresGet);
    assert_eq!(err.resource, datastore().as_str());
    assert_eq!(err.correlation_id.as_deref(), Some("req-404"));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_retry_after_above_the_cap_is_not_waited_for() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            json_response(429, arm_error("TooManyRequests", "slow down"))
                .insert_header("Retry-After", "120"),
        )
        .mount(&server)
        .await;

    let started = Instant::now();
    let err = client(&server)
        .get_workspace(&workspace())
        .await
        .unwrap_err();

    assert_eq!(err.status, Some(429));
    assert!(err.message.contains("Retry-After 120 s"), "{err}");
    assert_eq!(received(&server).await.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = ArmClient::new(options(&endpoint, 4), Arc::new(FixedToken)).unwrap();

    let err = client.get_workspace(&workspace()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Transport);
    assert_eq!(err.status, None);
    assert!(err.message.contains("could not connect"), "{err}");
    assert!(!err.message.contains("api-version"), "{err}");
    let id = err.client_request_id.unwrap_or_default();
    assert!(!id.is_nil(), "{err:?}");
    assert!(
        err.to_string()
            .ends_with(&format!("(client request id {id})"))
    );
}

#[tokio::test]
async fn a_timeout_carries_the_client_request_id_it_was_sent_with() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            json_response(200, sample("aml_workspace_get")).set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut options = options(&server.uri(), 4);
    options.request_timeout = Duration::from_millis(200);
    let client = ArmClient::new(options, Arc::new(FixedToken)).unwrap();

    let err = client.get_workspace(&workspace()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Transport);
    assert!(err.message.starts_with("timed out ("), "{err}");
    assert_eq!(err.correlation_id, None);
    // The id is the one the last attempt carried, so Azure's logs can be searched for it.
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1 + settings().max_retries);
    let sent = requests[requests.len() - 1].headers["x-ms-client-request-id"]
        .to_str()
        .unwrap();
    let carried = err.client_request_id.map(|id| id.to_string());
    assert_eq!(carried.as_deref(), Some(sent));
    assert!(
        err.to_string()
            .ends_with(&format!("(client request id {sent})")),
        "{err}"
    );
}

#[tokio::test]
async fn a_credential_failure_says_what_to_do_and_sends_nothing() {
    let server = MockServer::start().await;
    let client = ArmClient::new(options(&server.uri(), 4), Arc::new(NoToken)).unwrap();

    let err = client.list_keys(&account()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Credential);
    assert!(err.message.contains("az login"), "{err}");
    assert!(received(&server).await.is_empty());
}

/// Fails as a chain of developer tools does: one long reason per tool tried.
#[derive(Debug)]
struct EveryToolFails;

#[async_trait::async_trait]
impl TokenCredential for EveryToolFails {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let reason = |tool: &str| {
            format!(
                "{tool} authentication failed: the tool was not found on PATH or is not signed in; see https://aka.ms/azsdk/rust/identity/troubleshoot for what to do next"
            )
        };
        let message = ["AzureCliCredential", "AzureDeveloperCliCredential"].map(reason);
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            message.join(" "),
        ))
    }
}

#[tokio::test]
async fn a_credential_failure_keeps_every_tools_reason() {
    let server = MockServer::start().await;
    let client = ArmClient::new(options(&server.uri(), 4), Arc::new(EveryToolFails)).unwrap();

    let err = client.list_keys(&account()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Credential);
    for tool in ["AzureCliCredential", "AzureDeveloperCliCredential"] {
        assert!(err.message.contains(tool), "{tool} missing: {err}");
    }
    assert!(err.message.ends_with("for what to do next"), "{err}");
}

/// A credential that counts the token requests it gets and answers them as `answer` does.
#[derive(Debug)]
struct CountingCredential {
    calls: AtomicUsize,
    answer: fn() -> Option<azure_core::Error>,
}

impl CountingCredential {
    fn new(answer: fn() -> Option<azure_core::Error>) -> Arc<Self> {
        Arc::new(CountingCredential {
            calls: AtomicUsize::new(0),
            answer,
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenCredential for CountingCredential {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match (self.answer)() {
            Some(error) => Err(error),
            None => std::future::pending().await,
        }
    }
}

/// An identity endpoint that accepted the connection and never answered.
fn silent() -> Option<azure_core::Error> {
    None
}

/// The error azure_identity returns when the identity endpoint refuses the connection.
fn refused() -> Option<azure_core::Error> {
    use azure_core::error::ErrorKind;
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let transport = azure_core::Error::with_error(ErrorKind::Connection, io, "failed to execute");
    let message = "ManagedIdentityCredential authentication failed. failed to execute";
    Some(azure_core::Error::with_error(
        ErrorKind::Credential,
        transport,
        message,
    ))
}

fn client_with(
    server: &MockServer,
    credential: Arc<CountingCredential>,
    timeout: u64,
) -> ArmClient {
    let mut options = options(&server.uri(), 4);
    options.request_timeout = Duration::from_millis(timeout);
    ArmClient::new(options, credential).unwrap()
}

#[tokio::test]
async fn a_credential_that_never_answers_fails_after_one_request_timeout() {
    let server = MockServer::start().await;
    let credential = CountingCredential::new(silent);
    let client = client_with(&server, credential.clone(), 300);

    let started = Instant::now();
    let err = client.list_keys(&account()).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_millis(900), "{err}");
    assert_eq!(err.kind, ArmErrorKind::Credential);
    assert!(
        err.message
            .starts_with("no token for https://management.azure.com/.default: the credential did not answer within 300.0ms (the identity endpoint in IDENTITY_ENDPOINT"),
        "{err}"
    );
    assert_eq!(
        credential.calls(),
        1,
        "a silent endpoint is not asked again"
    );
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_credential_that_never_answers_is_given_up_on_at_the_deadline() {
    let server = MockServer::start().await;
    let credential = CountingCredential::new(silent);
    let client = client_with(&server, credential, 10_000);
    let late = client.with_deadline(Instant::now() + Duration::from_millis(300));

    let started = Instant::now();
    let err = late.get_workspace(&workspace()).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_millis(900), "{err}");
    assert_eq!(err.kind, ArmErrorKind::Deadline);
    assert!(
        err.message.contains("did not answer before the deadline")
            && err.message.contains("IDENTITY_ENDPOINT"),
        "{err}"
    );
}

#[tokio::test]
async fn a_credential_that_cannot_be_reached_is_asked_again_a_few_times() {
    let server = MockServer::start().await;
    let credential = CountingCredential::new(refused);
    let client = client_with(&server, credential.clone(), 10_000);

    let err = client.get_workspace(&workspace()).await.unwrap_err();

    assert_eq!(credential.calls(), 3);
    assert_eq!(err.kind, ArmErrorKind::Credential);
    assert_eq!(
        err.message,
        "no token for https://management.azure.com/.default: the credential could not be reached (3 attempts) (the identity endpoint in IDENTITY_ENDPOINT on Azure; `az` or `azd` on a workstation): Connection refused"
    );
    assert!(received(&server).await.is_empty());
}

// ---- secrets stay out of errors ---------------------------------------------------------------

#[tokio::test]
async fn an_unreadable_list_keys_answer_is_not_quoted() {
    let server = MockServer::start().await;
    let garbage =
        r#"{"keys": [{"keyName": "key1", "value": 12345678, "permissions": "FULL-SECRET-ISH"}"#;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(garbage, "application/json"))
        .mount(&server)
        .await;

    let err = client(&server).list_keys(&account()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Decode);
    let shown = format!("{err} {err:?}");
    for part in ["12345678", "FULL-SECRET-ISH", "keyName", "key1"] {
        assert!(!shown.contains(part), "{part} in {shown}");
    }
    assert!(shown.contains("could not be read"), "{shown}");
}

fn as_sent(value: &str) -> String {
    value.to_string()
}

/// How a validation message writes the value it quotes.
type Echo = fn(&str) -> String;

#[tokio::test]
async fn a_secret_quoted_back_by_a_put_validation_error_is_redacted_in_every_form() {
    let current: keysync::model::ml::Datastore =
        serde_json::from_value(sample("aml_datastore_get")).unwrap();
    let sas = || {
        current
            .with_sas_token(&SecretString::from(SAS_TOKEN))
            .unwrap()
    };
    let key = || {
        current
            .with_account_key(&SecretString::from(ACCOUNT_KEY))
            .unwrap()
    };
    // Only a piece of what was sent: shorter than any key-like run, so only what the request
    // sent tells it apart.
    let a_piece: Echo = |value| value[..30].to_string();
    let cases: [(DatastoreBody, Echo); 6] = [
        (sas(), as_sent),
        (sas(), percent_encoded),
        (sas(), percent_decoded),
        (key(), as_sent),
        (key(), percent_encoded),
        (key(), a_piece),
    ];

    for (body, echo) in cases {
        let server = MockServer::start().await;
        let echo = EchoSecret {
            status: 400,
            code: "UserError",
            echo,
        };
        Mock::given(method("PUT"))
            .respond_with(echo)
            .mount(&server)
            .await;

        let err = client(&server)
            .put_datastore(&datastore(), &body)
            .await
            .unwrap_err();

        let shown = format!("{err} {err:?}");
        for piece in secret_pieces() {
            assert!(!shown.contains(&piece), "{piece} in {shown}");
        }
        assert_eq!(err.status, Some(400));
        assert_eq!(err.code.as_deref(), Some("UserError"));
        assert_eq!(err.operation, Operation::DatastoresCreateOrUpdate);
        assert!(
            err.to_string().starts_with(&format!(
                "Datastores_CreateOrUpdate on {} failed: HTTP 400 UserError: Could not validate the credentials '[redacted]' for the datastore.",
                datastore()
            )),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_bearer_token_quoted_back_in_an_error_is_redacted() {
    let server = MockServer::start().await;
    let message = format!("The access token 'Bearer {TOKEN}' is not valid for this audience.");
    Mock::given(method("GET"))
        .respond_with(json_response(
            401,
            arm_error("InvalidAuthenticationToken", &message),
        ))
        .mount(&server)
        .await;

    let err = client(&server)
        .get_workspace(&workspace())
        .await
        .unwrap_err();

    assert_eq!(
        err.message,
        "The access token 'Bearer [redacted]' is not valid for this audience."
    );
    assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
}

// ---- long-running operations ------------------------------------------------------------------

#[tokio::test]
async fn resync_polls_location_until_it_stops_answering_202() {
    let server = MockServer::start().await;
    let status = format!(
        "{}/operations/resync-1?api-version={ML_VERSION}",
        server.uri()
    );
    Mock::given(method("POST"))
        .and(path(format!("{WORKSPACE}/resyncKeys")))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Location", status.as_str())
                .insert_header("Retry-After", "0"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/resync-1"))
        .respond_with(ResponseTemplate::new(202).insert_header("Retry-After", "0"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/resync-1"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    client(&server).resync_keys(&workspace()).await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 4);
    for poll in &requests[1..] {
        let polled = format!(
            "{}?{}",
            poll.url.path(),
            poll.url.query().unwrap_or_default()
        );
        assert!(status.ends_with(&polled), "polled {polled}, not {status}");
    }
    assert_common_headers(&requests);
}

/// A resync that ARM accepts and whose status answers "still running" for ever, asking each time
/// for the wait `retry_after`.
async fn mount_endless_resync(server: &MockServer, retry_after: &str) {
    let status = format!(
        "{}/operations/endless?api-version={ML_VERSION}",
        server.uri()
    );
    Mock::given(method("POST"))
        .and(path(format!("{WORKSPACE}/resyncKeys")))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Location", status.as_str())
                .insert_header("Retry-After", retry_after),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/endless"))
        .respond_with(ResponseTemplate::new(202).insert_header("Retry-After", retry_after))
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_resync_poll_waits_the_seconds_retry_after_asks_for() {
    let server = MockServer::start().await;
    mount_endless_resync(&server, "1").await;
    let started = Instant::now();

    let err = client(&server)
        .resync_keys_until(&workspace(), started + Duration::from_millis(2500))
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::StillRunning);
    // The resync, then a poll after 1 s and another after 2 s; a third would pass the deadline.
    assert_eq!(received(&server).await.len(), 3);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_resync_asking_for_an_absurd_wait_ends_at_the_deadline_without_a_panic() {
    let server = MockServer::start().await;
    mount_endless_resync(&server, "10000000000000000000").await;

    let err = client(&server)
        .resync_keys_until(&workspace(), Instant::now() + Duration::from_secs(1))
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::StillRunning);
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_resync_that_asks_for_no_wait_is_not_polled_back_to_back_until_the_deadline() {
    let server = MockServer::start().await;
    mount_endless_resync(&server, "0").await;
    let started = Instant::now();

    let err = client(&server)
        .resync_keys_until(&workspace(), started + Duration::from_secs(2))
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::StillRunning);
    // Three polls at once, then after 0.25 s, 0.5 s and 1 s: the next would pass the deadline.
    assert_eq!(received(&server).await.len(), 1 + 6);
}

async fn mount_async_operation(server: &MockServer, statuses: &[Value]) {
    let status_url = format!(
        "{}/asyncoperations/op-1?api-version={ML_VERSION}",
        server.uri()
    );
    Mock::given(method("POST"))
        .and(path(format!("{WORKSPACE}/resyncKeys")))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Azure-AsyncOperation", status_url.as_str())
                .insert_header("Location", format!("{}/elsewhere", server.uri()).as_str())
                .insert_header("Retry-After", "0"),
        )
        .mount(server)
        .await;
    for body in statuses {
        Mock::given(method("GET"))
            .and(path("/asyncoperations/op-1"))
            .respond_with(json_response(200, body.clone()).insert_header("Retry-After", "0"))
            .up_to_n_times(1)
            .mount(server)
            .await;
    }
}

#[tokio::test]
async fn resync_polls_azure_async_operation_until_succeeded() {
    let server = MockServer::start().await;
    let statuses = [
        json!({"status": "InProgress"}),
        json!({"status": "Succeeded"}),
    ];
    mount_async_operation(&server, &statuses).await;

    client(&server).resync_keys(&workspace()).await.unwrap();

    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.url.path() == "/asyncoperations/op-1")
    );
}

#[tokio::test]
async fn a_failed_async_operation_reports_its_error_code() {
    let server = MockServer::start().await;
    let failed = json!({
        "status": "Failed",
        "error": {"code": "StorageAccountKeyInvalid", "message": "The key could not be synced."}
    });
    mount_async_operation(&server, &[json!({"status": "InProgress"}), failed]).await;

    let err = client(&server).resync_keys(&workspace()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::OperationFailed);
    assert_eq!(err.code.as_deref(), Some("StorageAccountKeyInvalid"));
    assert_eq!(err.message, "The key could not be synced.");
    assert_eq!(err.operation, Operation::WorkspacesResyncKeys);
}

#[tokio::test]
async fn polling_stops_at_the_deadline_with_the_operation_still_running() {
    let server = MockServer::start().await;
    let status = format!("{}/operations/slow", server.uri());
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Location", status.as_str())
                .insert_header("Retry-After", "0"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_millis(50)))
        .mount(&server)
        .await;

    let deadline = Instant::now() + Duration::from_millis(300);
    let err = client(&server)
        .resync_keys_until(&workspace(), deadline)
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::StillRunning);
}

#[tokio::test]
async fn retries_stop_at_the_deadline_keeping_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            json_response(503, arm_error("ServerBusy", "busy"))
                .insert_header("Retry-After", "1")
                .insert_header("x-ms-correlation-request-id", "corr-late"),
        )
        .mount(&server)
        .await;

    let deadline = Instant::now() + Duration::from_millis(300);
    let err = client(&server)
        .resync_keys_until(&workspace(), deadline)
        .await
        .unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Deadline);
    assert_eq!(err.status, Some(503));
    assert_eq!(err.code.as_deref(), Some("ServerBusy"));
    assert_eq!(err.correlation_id.as_deref(), Some("corr-late"));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_status_url_on_another_host_is_not_polled() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Location", format!("{}/op", elsewhere.uri()).as_str()),
        )
        .mount(&server)
        .await;

    let err = client(&server).resync_keys(&workspace()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Decode);
    assert!(received(&elsewhere).await.is_empty());
}

/// A resync that ARM accepts, pointing at its status the way the ML provider does.
async fn mount_accepted_resync(server: &MockServer) -> String {
    let status_path = format!(
        "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/locations/westeurope/workspaceOperationsStatus/op-9"
    );
    let status_url = format!("{}{status_path}?api-version={ML_VERSION}", server.uri());
    Mock::given(method("POST"))
        .and(path(format!("{WORKSPACE}/resyncKeys")))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Location", status_url.as_str())
                .insert_header("Retry-After", "0"),
        )
        .mount(server)
        .await;
    status_path
}

const STATUS_READ: &str =
    "Microsoft.MachineLearningServices/locations/workspaceOperationsStatus/read";

#[tokio::test]
async fn a_refused_status_poll_leaves_the_resync_accepted_and_names_the_permission() {
    let server = MockServer::start().await;
    let status_path = mount_accepted_resync(&server).await;
    let refusal = format!(
        "The client 'keysync' does not have authorization to perform action '{STATUS_READ}'."
    );
    Mock::given(method("GET"))
        .and(path(status_path))
        .respond_with(
            json_response(403, arm_error("AuthorizationFailed", &refusal))
                .insert_header("x-ms-correlation-request-id", "corr-403"),
        )
        .mount(&server)
        .await;

    let err = client(&server).resync_keys(&workspace()).await.unwrap_err();
    let entry = execute::resync(&client(&server), &workspace()).await;

    assert_eq!(err.kind, ArmErrorKind::Unconfirmed);
    assert_eq!(err.operation, Operation::WorkspacesResyncKeysStatus);
    assert_eq!(err.status, Some(403));
    assert_eq!(err.correlation_id.as_deref(), Some("corr-403"));
    // The poll is authorized apart from the resync, and the custom role grants it.
    assert_eq!(err.operation.rbac_action(), STATUS_READ);
    assert!(Operation::rbac_actions().contains(&STATUS_READ));
    assert_eq!(entry.outcome, Outcome::Accepted);
    assert_eq!(
        entry.reason.as_deref(),
        Some(
            "resync accepted by Azure, which finishes it; Azure refused keysync its status \
             (HTTP 403 AuthorizationFailed): grant keysync's identity \
             Microsoft.MachineLearningServices/locations/workspaceOperationsStatus/read to follow it"
        )
    );
    // A refusal is not retried: one resync and one poll, twice.
    assert_eq!(received(&server).await.len(), 4);
}

#[tokio::test]
async fn a_status_poll_failing_past_the_retries_leaves_the_resync_accepted() {
    let server = MockServer::start().await;
    let status_path = mount_accepted_resync(&server).await;
    Mock::given(method("GET"))
        .and(path(status_path))
        .respond_with(gateway_page())
        .mount(&server)
        .await;

    let entry = execute::resync(&client(&server), &workspace()).await;

    assert_eq!(entry.outcome, Outcome::Accepted);
    // The status and code say what happened; Azure's text stays in the log.
    assert_eq!(
        entry.reason.as_deref(),
        Some(
            "resync accepted by Azure, which finishes it; its status could not be read (HTTP 503)"
        )
    );
    assert_eq!(
        received(&server).await.len(),
        1 + 1 + settings().max_retries
    );
}

#[tokio::test]
async fn an_arm_error_from_the_location_url_is_the_resync_failing() {
    let server = MockServer::start().await;
    let status_path = mount_accepted_resync(&server).await;
    Mock::given(method("GET"))
        .and(path(status_path))
        .respond_with(
            json_response(
                400,
                arm_error(
                    "WorkspaceKeySyncFailed",
                    "Could not sync the workspace keys.",
                ),
            )
            .insert_header("x-ms-correlation-request-id", "corr-failed"),
        )
        .mount(&server)
        .await;

    let err = client(&server).resync_keys(&workspace()).await.unwrap_err();
    let entry = execute::resync(&client(&server), &workspace()).await;

    // ARM's contract for a Location URL: a failed operation answers with an ARM error.
    assert_eq!(err.kind, ArmErrorKind::OperationFailed);
    assert_eq!(err.operation, Operation::WorkspacesResyncKeys);
    assert_eq!(err.status, Some(400));
    assert_eq!(err.code.as_deref(), Some("WorkspaceKeySyncFailed"));
    assert_eq!(err.correlation_id.as_deref(), Some("corr-failed"));
    assert_eq!(entry.outcome, Outcome::Failed);
    let reason = entry.reason.unwrap();
    assert!(reason.contains("WorkspaceKeySyncFailed"), "{reason}");
    assert!(reason.contains("corr-failed"), "{reason}");
    // A 400 is the operation's answer, not a passing fault: one resync and one poll, twice.
    assert_eq!(received(&server).await.len(), 4);
}

#[tokio::test]
async fn a_location_url_answering_a_server_error_past_the_retries_fails_the_resync() {
    let server = MockServer::start().await;
    let status_path = mount_accepted_resync(&server).await;
    Mock::given(method("GET"))
        .and(path(status_path))
        .respond_with(json_response(
            500,
            arm_error("InternalServerError", "The operation failed."),
        ))
        .mount(&server)
        .await;

    let entry = execute::resync(&client(&server), &workspace()).await;

    assert_eq!(entry.outcome, Outcome::Failed);
    assert!(
        entry
            .reason
            .as_deref()
            .unwrap()
            .contains("InternalServerError"),
        "{entry:?}"
    );
    assert_eq!(
        received(&server).await.len(),
        1 + 1 + settings().max_retries
    );
}

// ---- concurrency ------------------------------------------------------------------------------

/// Answers after `delay` and records when each request arrived.
struct Stopwatch {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    answer: ResponseTemplate,
}

impl Respond for Stopwatch {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        self.answer.clone()
    }
}

async fn timed_server(delay: Duration) -> (MockServer, Arc<Mutex<Vec<Instant>>>) {
    let server = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let answer = json_response(200, sample("aml_workspace_get")).set_delay(delay);
    Mock::given(method("GET"))
        .respond_with(Stopwatch {
            arrivals: Arc::clone(&arrivals),
            answer,
        })
        .mount(&server)
        .await;
    (server, arrivals)
}

#[tokio::test]
async fn one_slot_per_subscription_serializes_its_requests() {
    let delay = Duration::from_millis(200);
    let (server, arrivals) = timed_server(delay).await;
    let client = ArmClient::new(options(&server.uri(), 1), Arc::new(FixedToken)).unwrap();
    let id = workspace();

    let calls = (0..3).map(|_| client.get_workspace(&id));
    let results = futures::future::join_all(calls).await;

    assert!(results.iter().all(Result::is_ok));
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    for pair in arrivals.windows(2) {
        // Each request starts only after the previous answer, which took `delay`.
        assert!(pair[1] - pair[0] >= delay - Duration::from_millis(20));
    }
}

#[tokio::test]
async fn other_subscriptions_are_not_held_up() {
    let delay = Duration::from_millis(600);
    let (server, arrivals) = timed_server(delay).await;
    let client = ArmClient::new(options(&server.uri(), 1), Arc::new(FixedToken)).unwrap();
    let other = WORKSPACE.replace(SUB, "99999999-1111-2222-3333-444444444444");
    let (a, b) = (workspace(), WorkspaceId::parse(&other).unwrap());

    let (first, second) = tokio::join!(client.get_workspace(&a), client.get_workspace(&b));

    assert!(first.is_ok() && second.is_ok());
    let arrivals = arrivals.lock().unwrap().clone();
    // Both arrived before either answer was sent: they were in flight together.
    assert!(arrivals[1] - arrivals[0] < delay);
}

#[tokio::test]
async fn a_resync_conflict_is_retried_until_the_running_one_ends() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(
            409,
            arm_error("Conflict", "Another operation is in progress"),
        ))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    client(&server).resync_keys(&workspace()).await.unwrap();

    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn a_handle_with_a_deadline_stops_every_call_there() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            json_response(503, arm_error("ServerBusy", "busy")).insert_header("Retry-After", "1"),
        )
        .mount(&server)
        .await;

    let late = client(&server).with_deadline(Instant::now() + Duration::from_millis(300));
    let err = late.list_keys(&account()).await.unwrap_err();

    assert_eq!(err.kind, ArmErrorKind::Deadline);
    assert_eq!(received(&server).await.len(), 1);
}
