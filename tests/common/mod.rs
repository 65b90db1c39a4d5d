//! Helpers shared by the ARM client tests: a fake credential, client options with fast retries,
//! Azure's published samples, and the ids they use.

// Each test binary uses only some of these.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use keysync::arm::{ArmClient, ArmOptions, RetrySettings};
use keysync::resource_id::{DatastoreId, StorageAccountId, WorkspaceId};
use serde_json::{Value, json};
use wiremock::{MockServer, Request, ResponseTemplate};

pub const SCOPE: &str = "https://management.azure.com/.default";
pub const TOKEN: &str = "test-token-0123";
pub const SUB: &str = "00000000-1111-2222-3333-444444444444";
pub const WORKSPACE: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/test-rg/providers/Microsoft.MachineLearningServices/workspaces/my-aml-workspace";
pub const ACCOUNT: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/res9407/providers/Microsoft.Storage/storageAccounts/sto8596";
pub const STORAGE_VERSION: &str = "2025-08-01";
pub const ML_VERSION: &str = "2025-12-01";

/// Hands out one fixed token that expires far in the future.
#[derive(Debug)]
pub struct FixedToken;

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, [SCOPE]);
        let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        Ok(AccessToken::new(TOKEN, expires))
    }
}

/// Fails the way the Azure CLI credential does when nobody is logged in.
#[derive(Debug)]
pub struct NoToken;

#[async_trait::async_trait]
impl TokenCredential for NoToken {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "AzureCliCredential authentication failed. Please run 'az login'",
        ))
    }
}

pub fn settings() -> RetrySettings {
    RetrySettings {
        max_retries: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn options(endpoint: &str, max_concurrency: usize) -> ArmOptions {
    ArmOptions {
        endpoint: endpoint.parse().unwrap(),
        scope: SCOPE.to_string(),
        max_concurrency,
        request_timeout: Duration::from_secs(10),
        retry: settings(),
        credential_secrets: Vec::new(),
    }
}

pub fn client(server: &MockServer) -> ArmClient {
    ArmClient::new(options(&server.uri(), 4), Arc::new(FixedToken)).unwrap()
}

/// The 200 body of a sample in `tests/fixtures/azure-contract/arm/`.
pub fn sample(name: &str) -> Value {
    let file = format!(
        "{}/tests/fixtures/azure-contract/arm/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let sample: Value = serde_json::from_str(&text).unwrap();
    sample["responses"]["200"]["body"].clone()
}

/// A sample list page whose placeholder `nextLink` is replaced (or removed with `None`).
pub fn page(name: &str, next_link: Option<String>) -> Value {
    let mut body = sample(name);
    body["nextLink"] = next_link.map_or(Value::Null, Value::String);
    body
}

pub fn workspace() -> WorkspaceId {
    WorkspaceId::parse(WORKSPACE).unwrap()
}

pub fn account() -> StorageAccountId {
    StorageAccountId::parse(ACCOUNT).unwrap()
}

pub fn datastore() -> DatastoreId {
    workspace().datastore("workspaceblobstore").unwrap()
}

pub fn json_response(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

pub fn arm_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

pub async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// Every request carried the bearer token, a fresh client request id and keysync's user agent.
pub fn assert_common_headers(requests: &[Request]) {
    let mut ids = std::collections::HashSet::new();
    for request in requests {
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(header("authorization"), format!("Bearer {TOKEN}"));
        assert!(header("user-agent").starts_with("keysync/"));
        let id = header("x-ms-client-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert!(ids.insert(id.to_string()), "client request id reused");
    }
}

/// A SAS token as keysync mints it: its signature percent-encoded, so no run of it is as long
/// as a key.
pub const SAS_TOKEN: &str = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2026-01-01T00%3A00%3A00Z&spr=https%2Chttp&sig=g3gB%2FZX%2B9kq1Lm3Pq8Rt7Uv0Wx2Yz4Ab6Cd8Ef0Gh1I%3D";
/// The signature of [`SAS_TOKEN`], decoded.
pub const SAS_SIGNATURE: &str = "g3gB/ZX+9kq1Lm3Pq8Rt7Uv0Wx2Yz4Ab6Cd8Ef0Gh1I=";
/// An account key: 64 bytes in base64.
pub const ACCOUNT_KEY: &str = "Kx9/2bQ+7hZ3mN0pLw4RtY8uVi1oE6sAa5dFg2HjKl3ZxCv7Bn9Mq0Wp4Er8Ty+Ui/Op1As5Df2Gh6Jk3Lz7Xc0Vb4Nm8Q==";

/// The secret a datastore `PUT` body holds: its SAS token or its account key.
pub fn sent_secret(request: &Request) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let secrets = &body["properties"]["credentials"]["secrets"];
    let value = secrets["sasToken"].as_str().or(secrets["key"].as_str());
    value.unwrap().to_string()
}

/// Answers a datastore `PUT` as Azure ML's validation can: with `status`, quoting the secret it
/// was sent, written as `echo` returns it.
pub struct EchoSecret {
    pub status: u16,
    pub code: &'static str,
    pub echo: fn(&str) -> String,
}

impl wiremock::Respond for EchoSecret {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let quoted = (self.echo)(&sent_secret(request));
        let message = format!("Could not validate the credentials '{quoted}' for the datastore.");
        json_response(self.status, arm_error(self.code, &message))
    }
}

/// Every run of 8 characters of `secret`: none of them may show.
pub fn pieces(secret: &str) -> Vec<&str> {
    (0..=secret.len() - 8)
        .map(|at| &secret[at..at + 8])
        .collect()
}

pub fn percent_encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// The pieces of the SAS signature and the account key in every form a test echoes them.
pub fn secret_pieces() -> Vec<String> {
    let forms = [
        SAS_SIGNATURE.to_string(),
        percent_encoded(SAS_SIGNATURE),
        ACCOUNT_KEY.to_string(),
        percent_encoded(ACCOUNT_KEY),
    ];
    forms
        .iter()
        .flat_map(|form| pieces(form).into_iter().map(str::to_string))
        .collect()
}
