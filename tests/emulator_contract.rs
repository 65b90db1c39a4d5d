//! The local Azure emulator against Azure's contract: its answers read like the samples in
//! `azure-contract/arm/` through the crate's own models, and it behaves like ARM wherever a
//! client bug (a dropped field, an ignored `nextLink`, an unfollowed long-running operation, a
//! case-sensitive id, an ignored `Retry-After`) would show.
//!
//! The samples are the copies in `tests/fixtures/azure-contract`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keysync::emulator::{
    EmulatorOptions, FaultKind, FaultRule, RetryAfterFormat, RunningEmulator, Scenario,
};
use keysync::model::Page;
use keysync::model::ml::{Datastore, DatastoreBody, DatastoreSecrets, Workspace};
use keysync::model::storage::{AccountKeyList, AccountKeys, KeySlot, StorageAccount};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const GROUP: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml";
const STORAGE_API: &str = "api-version=2025-08-01";
const ML_API: &str = "api-version=2025-12-01";

fn account_path(name: &str) -> String {
    format!("{GROUP}/providers/Microsoft.Storage/storageAccounts/{name}")
}

fn workspace_path(name: &str) -> String {
    format!("{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{name}")
}

/// The JSON a datastore `PUT` sends, as a value the harness can send.
fn put_body(body: &DatastoreBody) -> Value {
    serde_json::from_slice(&body.to_json().unwrap()).unwrap()
}

fn datastore_path(workspace: &str, name: &str) -> String {
    format!("{}/datastores/{name}", workspace_path(workspace))
}

// ---------------------------------------------------------------------------------------------
// Harness

/// A running emulator with an HTTP client and a managed identity token for ARM.
struct Harness {
    emulator: RunningEmulator,
    http: reqwest::Client,
    token: String,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{e}: the emulator answered {}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Harness {
    async fn start(scenario: Scenario) -> Harness {
        let emulator = RunningEmulator::start(scenario, EmulatorOptions::default())
            .await
            .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut harness = Harness {
            emulator,
            http,
            token: String::new(),
        };
        let answer = harness
            .msi_token("https://management.azure.com", None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        harness.token = answer.json()["access_token"].as_str().unwrap().to_string();
        harness
    }

    async fn demo() -> Harness {
        Harness::start(Scenario::demo()).await
    }

    fn env(&self, name: &str) -> String {
        let env = self.emulator.env();
        env.into_iter().find(|(n, _)| n == name).unwrap().1
    }

    fn url(&self, path_and_query: &str) -> String {
        if path_and_query.starts_with("http") {
            return path_and_query.to_string();
        }
        format!("{}{}", self.env("KEYSYNC_ARM_ENDPOINT"), path_and_query)
    }

    async fn msi_token(&self, resource: &str, client_id: Option<&str>) -> Answer {
        let mut url = reqwest::Url::parse(&self.env("IDENTITY_ENDPOINT")).unwrap();
        url.query_pairs_mut()
            .append_pair("api-version", "2019-08-01")
            .append_pair("resource", resource);
        if let Some(client_id) = client_id {
            url.query_pairs_mut().append_pair("client_id", client_id);
        }
        let request = self
            .http
            .get(url)
            .header("X-IDENTITY-HEADER", self.env("IDENTITY_HEADER"));
        read(request.send().await.unwrap()).await
    }

    async fn send_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.unwrap()).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.send_as(Some(&self.token), method, path, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> Answer {
        self.send(Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn control(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.send_as(None, method, &format!("/_emulator/{path}"), body)
            .await
    }

    fn state(&self) -> Value {
        self.emulator.state()
    }

    fn account_state(&self, name: &str) -> Value {
        let state = self.state();
        let accounts = state["storageAccounts"].as_array().unwrap();
        accounts
            .iter()
            .find(|a| a["id"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap()
            .clone()
    }

    fn workspace_state(&self, name: &str) -> Value {
        let state = self.state();
        let workspaces = state["workspaces"].as_array().unwrap();
        workspaces
            .iter()
            .find(|w| w["id"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap()
            .clone()
    }

    fn datastore_state(&self, workspace: &str, name: &str) -> Value {
        let datastores = self.workspace_state(workspace)["datastores"].clone();
        datastores
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap()
            .clone()
    }

    fn statuses_of(&self, operation: &str) -> Vec<u16> {
        let requests = self.emulator.requests();
        let matching = requests.iter().filter(|r| r.operation == operation);
        matching.map(|r| r.status).collect()
    }
}

async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        text,
    }
}

/// The demo scenario with some top-level fields replaced.
fn demo_with(changes: Value) -> Scenario {
    let mut value = serde_json::to_value(Scenario::demo()).unwrap();
    for (key, change) in changes.as_object().unwrap() {
        value[key] = change.clone();
    }
    serde_json::from_value(value).unwrap()
}

/// Waits until `check` holds on the state, or fails after a few seconds.
async fn eventually(harness: &Harness, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = harness.state();
        if check(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {state:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Contract samples

fn contract(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-contract/arm")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the contract sample {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn sample(name: &str, status: &str) -> Value {
    let body = contract(name)["responses"][status]["body"].clone();
    assert!(!body.is_null(), "{name} has no {status} body");
    body
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Fails when `ours` lacks a key the sample has, except the ones Azure itself leaves out in
/// some cases (listed with the reason at each call).
fn assert_has_sample_keys(ours: &Value, sample: &Value, optional: &[&str], what: &str) {
    let ours = keys(ours);
    let missing: Vec<String> = keys(sample)
        .into_iter()
        .filter(|k| !ours.contains(k) && !optional.contains(&k.as_str()))
        .collect();
    assert!(missing.is_empty(), "{what}: the emulator lacks {missing:?}");
}

/// Keys of a storage account that only geo-redundant accounts, accounts with a routing
/// preference or with a managed identity have.
const ACCOUNT_OPTIONAL: [&str; 6] = [
    "geoReplicationStats",
    "secondaryLocation",
    "statusOfSecondary",
    "routingPreference",
    "geoPriorityReplicationStatus",
    "identity",
];

fn assert_account_like(ours: &Value, sample: &Value) {
    assert_has_sample_keys(ours, sample, &ACCOUNT_OPTIONAL, "account");
    let (o, s) = (&ours["properties"], &sample["properties"]);
    assert_has_sample_keys(o, s, &ACCOUNT_OPTIONAL, "account properties");
    // Routing endpoints exist only with a routing preference.
    let routing = ["microsoftEndpoints", "internetEndpoints"];
    assert_has_sample_keys(
        &o["primaryEndpoints"],
        &s["primaryEndpoints"],
        &routing,
        "endpoints",
    );
    serde_json::from_value::<StorageAccount>(ours.clone()).unwrap();
}

fn assert_datastore_like(ours: &Value, sample: &Value) {
    assert_has_sample_keys(ours, sample, &[], "datastore");
    assert_has_sample_keys(
        &ours["properties"],
        &sample["properties"],
        &[],
        "datastore properties",
    );
    let credentials = &ours["properties"]["credentials"];
    assert_has_sample_keys(
        credentials,
        &sample["properties"]["credentials"],
        &[],
        "credentials",
    );
    // Reads never carry the secret itself.
    assert_eq!(
        keys(&credentials["secrets"]),
        keys(&sample["properties"]["credentials"]["secrets"])
    );
    assert_has_sample_keys(
        &ours["systemData"],
        &sample["systemData"],
        &[],
        "systemData",
    );
    serde_json::from_value::<Datastore>(ours.clone()).unwrap();
}

#[tokio::test]
async fn storage_answers_read_like_the_samples() {
    let h = Harness::demo().await;

    let sample_get = sample("storage_StorageAccountGetProperties.json", "200");
    serde_json::from_value::<StorageAccount>(sample_get.clone()).unwrap();
    let get = h
        .get(&format!("{}?{STORAGE_API}", account_path("stmlshared01")))
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_account_like(&get.json(), &sample_get);
    let account: StorageAccount = get.parse();
    assert_eq!(
        account.endpoint_suffix().as_deref(),
        Some("core.windows.net")
    );
    assert_eq!(account.properties.allow_shared_key_access, Some(true));

    let sample_list = sample("storage_StorageAccountList.json", "200");
    serde_json::from_value::<Page<StorageAccount>>(sample_list.clone()).unwrap();
    let list = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}"
        ))
        .await;
    let page: Page<StorageAccount> = list.parse();
    assert_eq!(page.value.len(), 3);
    assert_account_like(&list.json()["value"][0], &sample_list["value"][0]);

    for (file, path) in [
        ("storage_StorageAccountListKeys.json", "listKeys"),
        ("storage_StorageAccountRegenerateKey.json", "regenerateKey"),
    ] {
        let sample_keys = sample(file, "200");
        serde_json::from_value::<AccountKeyList>(sample_keys.clone()).unwrap();
        let body = json!({"keyName": "key2"});
        let answer = h
            .post(
                &format!("{}/{path}?{STORAGE_API}", account_path("stmlshared01")),
                Some(&body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_has_sample_keys(&answer.json(), &sample_keys, &[], path);
        assert_has_sample_keys(
            &answer.json()["keys"][0],
            &sample_keys["keys"][0],
            &[],
            path,
        );
        let keys = AccountKeys::try_from(answer.parse::<AccountKeyList>()).unwrap();
        assert_eq!(keys.key1.expose_secret().len(), 88);
    }
}

#[tokio::test]
async fn an_account_without_allow_shared_key_access_leaves_it_out() {
    let h = Harness::demo().await;
    let get = h
        .get(&format!("{}?{STORAGE_API}", account_path("stmlother02")))
        .await;
    let properties = get.json()["properties"].clone();
    assert!(
        properties.get("allowSharedKeyAccess").is_none(),
        "{properties:#}"
    );
    assert!(get.parse::<StorageAccount>().shared_key_allowed());
    assert_eq!(properties["keyCreationTime"]["key2"], Value::Null);
    assert!(
        !get.text.contains(
            h.account_state("stmlother02")["keys"]["key1"]
                .as_str()
                .unwrap()
        )
    );
}

#[tokio::test]
async fn workspace_answers_read_like_the_samples() {
    let h = Harness::demo().await;

    let sample_get = sample("aml_workspace_get.json", "200");
    serde_json::from_value::<Workspace>(sample_get.clone()).unwrap();
    let get = h
        .get(&format!("{}?{ML_API}", workspace_path("mlw-vision")))
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_has_sample_keys(&get.json(), &sample_get, &[], "workspace");
    // Encryption appears only with customer-managed keys, imageBuildCompute only when set.
    let optional = ["encryption", "imageBuildCompute"];
    assert_has_sample_keys(
        &get.json()["properties"],
        &sample_get["properties"],
        &optional,
        "workspace properties",
    );
    let workspace: Workspace = get.parse();
    let storage = workspace.properties.storage_account.unwrap();
    assert!(
        storage.eq_ignore_ascii_case(&account_path("stmlshared01")),
        "{storage}"
    );
    assert_ne!(
        storage,
        account_path("stmlshared01"),
        "the demo spells it as Azure ML often does"
    );

    let sample_list = sample("aml_listBySubscription.json", "200");
    serde_json::from_value::<Page<Workspace>>(sample_list.clone()).unwrap();
    let list = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces?{ML_API}"
        ))
        .await;
    let page: Page<Workspace> = list.parse();
    assert_eq!(page.value.len(), 2);
    let item = &list.json()["value"][0];
    assert_has_sample_keys(item, &sample_list["value"][0], &[], "listed workspace");
    assert_has_sample_keys(
        &item["properties"],
        &sample_list["value"][0]["properties"],
        &[],
        "listed workspace properties",
    );

    let resync = h
        .post(
            &format!("{}/resyncKeys?{ML_API}", workspace_path("mlw-vision")),
            None,
        )
        .await;
    assert_eq!(resync.status, StatusCode::ACCEPTED);
    assert!(contract("aml_resyncKeys.json")["responses"]["202"]["headers"]["Location"].is_string());
    assert!(
        resync
            .header("location")
            .is_some_and(|l| l.starts_with("http://127.0.0.1:"))
    );
}

#[tokio::test]
async fn datastore_answers_read_like_the_samples() {
    let h = Harness::demo().await;

    let sample_get = sample("aml_datastore_get.json", "200");
    serde_json::from_value::<Datastore>(sample_get.clone()).unwrap();
    let get = h
        .get(&format!(
            "{}?{ML_API}",
            datastore_path("mlw-vision", "workspaceblobstore")
        ))
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_datastore_like(&get.json(), &sample_get);

    let sample_list = sample("aml_datastore_list.json", "200");
    serde_json::from_value::<Page<Datastore>>(sample_list.clone()).unwrap();
    let list = h
        .get(&format!(
            "{}/datastores?{ML_API}&count=1",
            workspace_path("mlw-vision")
        ))
        .await;
    assert_has_sample_keys(&list.json(), &sample_list, &[], "datastore list");
    assert_datastore_like(&list.json()["value"][0], &sample_list["value"][0]);
    list.parse::<Page<Datastore>>();

    let sample_secrets = sample("aml_datastore_listSecrets.json", "200");
    serde_json::from_value::<DatastoreSecrets>(sample_secrets.clone()).unwrap();
    let secrets = h
        .post(
            &format!(
                "{}/listSecrets?{ML_API}",
                datastore_path("mlw-vision", "curated")
            ),
            None,
        )
        .await;
    assert_eq!(secrets.status, StatusCode::OK);
    assert_eq!(keys(&secrets.json()), keys(&sample_secrets));
    let secrets: DatastoreSecrets = secrets.parse();
    let key2 = h.account_state("stmlshared01")["keys"]["key2"].clone();
    assert_eq!(secrets.key.unwrap().expose_secret(), key2.as_str().unwrap());
}

#[tokio::test]
async fn the_sample_writes_are_accepted_and_answered_like_the_samples() {
    let h = Harness::demo().await;
    for (file, name) in [
        (
            "aml_datastore_AzureBlobWAccountKey_createOrUpdate.json",
            "sample_blob",
        ),
        (
            "aml_datastore_AzureFileWAccountKey_createOrUpdate.json",
            "sample_file",
        ),
        (
            "aml_datastore_AzureDataLakeGen1WServicePrincipal_createOrUpdate.json",
            "sample_gen1",
        ),
        (
            "aml_datastore_AzureDataLakeGen2WServicePrincipal_createOrUpdate.json",
            "sample_gen2",
        ),
    ] {
        let request = contract(file)["parameters"]["body"].clone();
        let path = format!("{}?{ML_API}", datastore_path("mlw-vision", name));
        let created = h.put(&path, &request).await;
        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{file}: {}",
            created.text
        );
        assert_datastore_like(&created.json(), &sample(file, "201"));
        let updated = h.put(&path, &request).await;
        assert_eq!(updated.status, StatusCode::OK, "{file}");
        assert_datastore_like(&updated.json(), &sample(file, "200"));
    }
    let delete_statuses = keys(&contract("aml_datastore_delete.json")["responses"]);
    let deleted = h
        .send(
            Method::DELETE,
            &format!("{}?{ML_API}", datastore_path("mlw-vision", "sample_blob")),
            None,
        )
        .await;
    assert!(delete_statuses.contains(deleted.status.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Paging

/// Follows `nextLink`s from `first` and returns the pages' items.
async fn follow<T: DeserializeOwned>(h: &Harness, first: &str) -> (Vec<T>, Vec<String>) {
    let mut items = Vec::new();
    let mut links = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(url) = next.take() {
        let answer = h.get(&url).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.text);
        let page: Page<T> = answer.parse();
        items.extend(page.value);
        if let Some(link) = page.next_link {
            links.push(link.clone());
            next = Some(link);
        }
        assert!(links.len() < 50, "paging does not end");
    }
    (items, links)
}

#[tokio::test]
async fn datastores_page_with_count_and_absolute_next_links() {
    let h = Harness::demo().await;
    let base = format!("{}/datastores?{ML_API}", workspace_path("mlw-vision"));

    let (all, links) = follow::<Datastore>(&h, &format!("{base}&count=4")).await;
    let names: Vec<&str> = all.iter().map(Datastore::name).collect();
    assert_eq!(
        names,
        [
            "workspaceblobstore",
            "workspacefilestore",
            "curated",
            "images_identity",
            "lake_sp",
            "archive_other"
        ]
    );
    assert_eq!(links.len(), 1);
    assert!(links[0].starts_with("http://127.0.0.1:"), "{}", links[0]);
    assert!(
        links[0].contains("count=4") && links[0].contains("$skip="),
        "{}",
        links[0]
    );

    let (small, links) = follow::<Datastore>(&h, &format!("{base}&count=2")).await;
    assert_eq!(small.len(), 6);
    assert_eq!(links.len(), 2);

    let first_page = h.get(&base).await.parse::<Page<Datastore>>();
    assert_eq!(first_page.value.len(), 6);
    assert!(first_page.next_link.is_none());

    let bad = h.get(&format!("{base}&$skip=not-a-token")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "UserError");
}

#[tokio::test]
async fn datastore_lists_filter_by_default_and_names_across_pages() {
    let h = Harness::demo().await;
    let base = format!("{}/datastores?{ML_API}", workspace_path("mlw-vision"));
    let defaults = h
        .get(&format!("{base}&isDefault=true"))
        .await
        .parse::<Page<Datastore>>();
    let names: Vec<&str> = defaults.value.iter().map(Datastore::name).collect();
    assert_eq!(names, ["workspaceblobstore"]);

    let url = format!("{base}&names=CURATED&names=lake_sp,archive_other&count=1");
    let (named, links) = follow::<Datastore>(&h, &url).await;
    let names: Vec<&str> = named.iter().map(Datastore::name).collect();
    assert_eq!(names, ["curated", "lake_sp", "archive_other"]);
    assert!(
        links.iter().all(|l| l.contains("names=CURATED")),
        "{links:?}"
    );
}

#[tokio::test]
async fn workspaces_and_accounts_page_with_skip_tokens() {
    let mut workspaces = Vec::new();
    for i in 0..5 {
        workspaces.push(json!({
            "id": format!("{}{i}", workspace_path("mlw-paged-")),
            "storageAccount": account_path("stmlshared01")
        }));
    }
    let h = Harness::start(demo_with(json!({
        "workspaces": workspaces,
        "workspacesPageSize": 2,
        "storageAccountsPageSize": 1
    })))
    .await;

    let url = format!(
        "/subscriptions/{SUB}/providers/Microsoft.MachineLearningServices/workspaces?{ML_API}"
    );
    let (listed, links) = follow::<Workspace>(&h, &url).await;
    let names: BTreeSet<String> = listed.iter().map(|w| w.name.clone()).collect();
    assert_eq!(listed.len(), 5);
    assert_eq!(names.len(), 5);
    assert_eq!(links.len(), 2);
    assert!(
        links
            .iter()
            .all(|l| l.contains("$skipToken=") && l.contains(ML_API))
    );

    let url =
        format!("/subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}");
    let (accounts, links) = follow::<StorageAccount>(&h, &url).await;
    assert_eq!(accounts.len(), 3);
    assert_eq!(links.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Authentication, api-versions, routing

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_like_arm_does() {
    let h = Harness::demo().await;
    let path = format!("{}?{STORAGE_API}", account_path("stmlshared01"));

    let missing = h.send_as(None, Method::GET, &path, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.error_code(), "AuthenticationFailed");
    assert!(
        missing
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer ")
    );
    assert!(
        missing
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    let forged = h.send_as(Some("forged"), Method::GET, &path, None).await;
    assert_eq!(forged.error_code(), "InvalidAuthenticationToken");

    let storage_token = h.msi_token("https://storage.azure.com/", None).await.json();
    let token = storage_token["access_token"].as_str().unwrap();
    let wrong_audience = h.send_as(Some(token), Method::GET, &path, None).await;
    assert_eq!(
        wrong_audience.error_code(),
        "InvalidAuthenticationTokenAudience"
    );

    let user = h.control(Method::POST, "user-token", None).await.json();
    let user_token = user["access_token"].as_str().unwrap();
    let as_user = h.send_as(Some(user_token), Method::GET, &path, None).await;
    assert_eq!(as_user.status, StatusCode::OK);

    let statuses = h.statuses_of("StorageAccounts_GetProperties");
    assert_eq!(statuses, [401, 401, 401, 200]);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let h = Harness::start(demo_with(json!({"tokenLifetimeSeconds": 0}))).await;
    let answer = h
        .get(&format!("{}?{STORAGE_API}", account_path("stmlshared01")))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error_code(), "ExpiredAuthenticationToken");
}

#[tokio::test]
async fn the_identity_endpoint_checks_its_secret_and_identities() {
    let identities = json!([{"clientId": "0c0c0c0c-0000-4000-8000-000000000001", "principalId": "0d0d0d0d-0000-4000-8000-000000000001"}]);
    let h = Harness::start(demo_with(json!({"identities": identities}))).await;
    let known = h
        .msi_token(
            "https://management.azure.com",
            Some("0C0C0C0C-0000-4000-8000-000000000001"),
        )
        .await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(known.json()["token_type"], "Bearer");
    assert!(
        known.json()["expires_on"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let unknown = h
        .msi_token("https://management.azure.com", Some("someone-else"))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);

    let no_secret = h
        .http
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://management.azure.com",
            h.env("IDENTITY_ENDPOINT")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(no_secret.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_versions_are_required_and_checked_per_provider() {
    let h = Harness::demo().await;
    let account = account_path("stmlshared01");
    let workspace = workspace_path("mlw-vision");

    let missing = h.get(&account).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.error_code(), "MissingApiVersionParameter");

    let storage_on_ml = h.get(&format!("{workspace}?{STORAGE_API}")).await;
    assert_eq!(storage_on_ml.error_code(), "InvalidApiVersionParameter");
    let ml_on_storage = h.get(&format!("{account}?{ML_API}")).await;
    assert_eq!(ml_on_storage.error_code(), "InvalidApiVersionParameter");

    let preview = h
        .get(&format!("{workspace}?api-version=2024-10-01-preview"))
        .await;
    assert_eq!(preview.status, StatusCode::OK);
}

#[tokio::test]
async fn paths_match_ignoring_case_and_unknown_resources_are_named() {
    let h = Harness::demo().await;
    let shouted = format!(
        "/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/RG-ML/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/STMLSHARED01?{STORAGE_API}"
    );
    let answer = h.get(&shouted).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["id"], account_path("stmlshared01"));

    let other_sub = h
        .get(&format!("/subscriptions/99999999-2222-3333-4444-555555555555/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}"))
        .await;
    assert_eq!(
        (other_sub.status, other_sub.error_code().as_str()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
    let other_group = h
        .get(&format!("/subscriptions/{SUB}/resourceGroups/rg-none/providers/Microsoft.Storage/storageAccounts/x?{STORAGE_API}"))
        .await;
    assert_eq!(other_group.error_code(), "ResourceGroupNotFound");
    let no_account = h
        .get(&format!("{}?{STORAGE_API}", account_path("stnothere")))
        .await;
    assert_eq!(
        (no_account.status, no_account.error_code().as_str()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    let no_datastore = h
        .get(&format!(
            "{}?{ML_API}",
            datastore_path("mlw-vision", "nothere")
        ))
        .await;
    assert_eq!(
        (no_datastore.status, no_datastore.error_code().as_str()),
        (StatusCode::NOT_FOUND, "UserError")
    );

    let unknown = h
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Web/sites?{STORAGE_API}"
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(h.statuses_of("Unknown"), [404]);
}

#[tokio::test]
async fn every_answer_carries_arm_request_ids() {
    let h = Harness::demo().await;
    let url = h.url(&format!("{}?{STORAGE_API}", account_path("stmlshared01")));
    let request = h
        .http
        .get(url)
        .bearer_auth(&h.token)
        .header("x-ms-client-request-id", "client-42");
    let answer = read(request.send().await.unwrap()).await;
    assert_eq!(answer.header("x-ms-client-request-id"), Some("client-42"));
    for name in ["x-ms-request-id", "x-ms-correlation-request-id"] {
        assert!(
            uuid::Uuid::try_parse(answer.header(name).unwrap()).is_ok(),
            "{name}"
        );
    }
    let refused = h.send_as(None, Method::GET, &account_path("x"), None).await;
    assert!(refused.header("x-ms-request-id").is_some());
}

// ---------------------------------------------------------------------------------------------
// regenerateKey and events

#[tokio::test]
async fn regenerating_a_key_replaces_it_and_posts_the_event() {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let h = Harness::demo().await;
    h.emulator
        .set_event_webhook(Some(format!("{}/events", receiver.uri()).parse().unwrap()));
    let before = h.account_state("stmlshared01");

    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlshared01")
    );
    let answer = h.post(&path, Some(&json!({"keyName": "Key1"}))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let keys = AccountKeys::try_from(answer.parse::<AccountKeyList>()).unwrap();
    let after = h.account_state("stmlshared01");
    assert_ne!(after["keys"]["key1"], before["keys"]["key1"]);
    assert_eq!(after["keys"]["key2"], before["keys"]["key2"]);
    assert_eq!(
        keys.key1.expose_secret(),
        after["keys"]["key1"].as_str().unwrap()
    );
    assert_eq!(after["regenerations"], 1);
    let created = after["keyCreationTime"]["key1"].as_str().unwrap();
    assert!(created > before["keyCreationTime"]["key1"].as_str().unwrap());
    // The demo runs on the real clock.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        created.starts_with(&today),
        "{created} is not today, {today}"
    );

    let get = h
        .get(&format!("{}?{STORAGE_API}", account_path("stmlshared01")))
        .await;
    let account: StorageAccount = get.parse();
    assert_eq!(account.key_creation_time().newest(), KeySlot::Key1);

    let state = eventually(&h, "delivery", |s| s["events"][0]["delivered"] == true).await;
    assert_eq!(state["events"][0]["attempts"], 1);
    assert!(state["events"][0].get("claims").is_none());
    let posted = receiver.received_requests().await.unwrap();
    assert_eq!(posted.len(), 1);
    let headers = &posted[0].headers;
    assert_eq!(headers["aeg-event-type"], "Notification");
    assert_eq!(headers["aeg-subscription-name"], "KEYSYNC");
    assert_eq!(headers["aeg-delivery-count"], "0");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let events: Value = serde_json::from_slice(&posted[0].body).unwrap();
    let event = &events[0];
    assert_eq!(event["subject"], account_path("stmlshared01"));
    assert_eq!(
        event["eventType"],
        "Microsoft.Resources.ResourceActionSuccess"
    );
    assert_eq!(
        event["data"]["operationName"],
        "Microsoft.Storage/storageAccounts/regenerateKey/action"
    );
    assert_eq!(
        event["data"]["authorization"]["evidence"]["principalType"],
        "ServicePrincipal"
    );
    assert_eq!(
        event["data"]["correlationId"],
        answer.header("x-ms-correlation-request-id").unwrap()
    );
    assert_eq!(event["data"]["httpRequest"]["url"], h.url(&path));
    assert_eq!(event["id"], state["events"][0]["id"]);
}

#[tokio::test]
async fn a_portal_user_regeneration_carries_the_users_claims() {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let h = Harness::demo().await;
    h.emulator
        .set_event_webhook(Some(receiver.uri().parse().unwrap()));
    let user = h.control(Method::POST, "user-token", None).await.json();
    let token = user["access_token"].as_str().unwrap();
    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlother02")
    );
    let answer = h
        .send_as(
            Some(token),
            Method::POST,
            &path,
            Some(&json!({"keyName": "key2"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);

    eventually(&h, "delivery", |s| s["events"][0]["delivered"] == true).await;
    let posted = receiver.received_requests().await.unwrap();
    let events: Value = serde_json::from_slice(&posted[0].body).unwrap();
    let data = &events[0]["data"];
    assert_eq!(data["authorization"]["evidence"]["principalType"], "User");
    assert_eq!(data["claims"]["name"], "Operator Example");
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_a_growing_delivery_count() {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&receiver)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let scenario = demo_with(json!({"eventDelivery": {"maxAttempts": 5, "retryDelayMs": 10}}));
    let h = Harness::start(scenario).await;
    h.emulator
        .set_event_webhook(Some(receiver.uri().parse().unwrap()));
    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlshared01")
    );
    h.post(&path, Some(&json!({"keyName": "key2"}))).await;

    let state = eventually(&h, "delivery", |s| s["events"][0]["delivered"] == true).await;
    assert_eq!(state["events"][0]["attempts"], 3);
    assert_eq!(state["events"][0]["lastStatus"], 200);
    let counts: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers["aeg-delivery-count"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
}

#[tokio::test]
async fn a_bad_key_name_is_refused_and_changes_nothing() {
    let h = Harness::demo().await;
    let before = h.account_state("stmlshared01");
    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlshared01")
    );
    let kerb = h.post(&path, Some(&json!({"keyName": "kerb1"}))).await;
    assert_eq!(
        (kerb.status, kerb.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "InvalidValuesForRequestParameters")
    );
    let text = h
        .http
        .post(h.url(&path))
        .bearer_auth(&h.token)
        .header("content-type", "application/json")
        .body("key1")
        .send()
        .await
        .unwrap();
    assert_eq!(read(text).await.error_code(), "InvalidRequestContent");
    assert_eq!(h.account_state("stmlshared01"), before);
    assert!(h.state()["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn list_keys_adds_kerberos_keys_only_when_asked() {
    let h = Harness::demo().await;
    let path = format!("{}/listKeys?{STORAGE_API}", account_path("stmlshared01"));
    let plain = h.post(&path, None).await.json();
    assert_eq!(plain["keys"].as_array().unwrap().len(), 2);
    let kerb = h.post(&format!("{path}&$expand=kerb"), None).await.json();
    let names: Vec<&str> = kerb["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["key1", "key2", "kerb1", "kerb2"]);
    assert_eq!(kerb["keys"][0]["permissions"], "FULL");
}

// ---------------------------------------------------------------------------------------------
// resyncKeys

async fn regenerate(h: &Harness, account: &str, key: &str) {
    let path = format!("{}/regenerateKey?{STORAGE_API}", account_path(account));
    assert_eq!(
        h.post(&path, Some(&json!({"keyName": key}))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_resync_completes_only_when_its_location_is_polled_to_the_end() {
    let h = Harness::start(demo_with(json!({"lroRetryAfterSeconds": 2}))).await;
    regenerate(&h, "stmlshared01", "key1").await;
    assert_eq!(h.workspace_state("mlw-vision")["storageKeysInSync"], false);

    let accepted = h
        .post(
            &format!("{}/resyncKeys?{ML_API}", workspace_path("mlw-vision")),
            None,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(accepted.header("retry-after"), Some("2"));
    assert!(accepted.header("azure-asyncoperation").is_none());
    let location = accepted.header("location").unwrap().to_string();
    assert_eq!(h.workspace_state("mlw-vision")["storageKeysInSync"], false);

    let running = h.get(&location).await;
    assert_eq!(running.status, StatusCode::ACCEPTED);
    assert_eq!(running.header("location"), Some(location.as_str()));
    assert_eq!(h.workspace_state("mlw-vision")["storageKeysInSync"], false);

    let done = h.get(&location).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.json(), json!({}));
    let workspace = h.workspace_state("mlw-vision");
    assert_eq!(workspace["storageKeysInSync"], true);
    assert_eq!(workspace["resyncsCompleted"], 1);
    assert_eq!(h.statuses_of("Workspaces_ResyncKeysStatus"), [202, 200]);
}

#[tokio::test]
async fn a_resync_can_report_through_azure_async_operation() {
    let scenario = demo_with(json!({"lroStyle": "azure-async-operation", "resyncPolls": 2}));
    let h = Harness::start(scenario).await;
    regenerate(&h, "stmlother02", "key2").await;
    let accepted = h
        .post(
            &format!("{}/resyncKeys?{ML_API}", workspace_path("mlw-forecast")),
            None,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert!(accepted.header("location").is_none());
    let status_url = accepted.header("azure-asyncoperation").unwrap().to_string();

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = h.get(&status_url).await;
        assert_eq!(answer.status, StatusCode::OK);
        statuses.push(answer.json()["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["InProgress", "InProgress", "Succeeded"]);
    assert_eq!(h.workspace_state("mlw-forecast")["storageKeysInSync"], true);
}

#[tokio::test]
async fn a_conflict_rule_refuses_a_resync_while_another_runs() {
    let h = Harness::demo().await;
    h.emulator.set_faults(vec![FaultRule {
        while_running: true,
        ..FaultRule::new("Workspaces_ResyncKeys", FaultKind::Conflict)
    }]);
    let path = format!("{}/resyncKeys?{ML_API}", workspace_path("mlw-vision"));
    let first = h.post(&path, None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = h.post(&path, None).await;
    assert_eq!(
        (second.status, second.error_code().as_str()),
        (StatusCode::CONFLICT, "Conflict")
    );
    let other = h
        .post(
            &format!("{}/resyncKeys?{ML_API}", workspace_path("mlw-forecast")),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);

    let location = first.header("location").unwrap().to_string();
    while h.get(&location).await.status == StatusCode::ACCEPTED {}
    assert_eq!(h.post(&path, None).await.status, StatusCode::ACCEPTED);
    assert_eq!(h.workspace_state("mlw-vision")["resyncCount"], 2);
}

// ---------------------------------------------------------------------------------------------
// Datastore writes

#[tokio::test]
async fn an_update_in_place_keeps_every_field_and_stores_the_new_key() {
    let h = Harness::demo().await;
    let path = format!("{}?{ML_API}", datastore_path("mlw-vision", "curated"));
    let before = h.get(&path).await;
    let datastore: Datastore = before.parse();
    let key1 = h.account_state("stmlshared01")["keys"]["key1"]
        .as_str()
        .unwrap()
        .to_string();
    let body = datastore
        .with_account_key(&SecretString::from(key1.clone()))
        .unwrap();

    let written = h.put(&path, &put_body(&body)).await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.text);
    assert!(
        !written.text.contains(&key1),
        "a write answer must not carry the key"
    );
    let after = h.get(&path).await.json();
    let mut expected = before.json();
    expected["systemData"] = after["systemData"].clone();
    assert_eq!(after, expected);
    assert_ne!(
        after["systemData"]["lastModifiedAt"],
        before.json()["systemData"]["lastModifiedAt"]
    );
    assert_eq!(after["systemData"]["lastModifiedByType"], "Application");

    let stored = h.datastore_state("mlw-vision", "curated");
    assert_eq!(
        stored["secrets"],
        json!({"secretsType": "AccountKey", "key": key1})
    );
    assert_eq!(stored["writes"], 1);
    assert_eq!(stored["resource"], after);
}

#[tokio::test]
async fn a_write_that_drops_a_field_loses_it() {
    let h = Harness::demo().await;
    let path = format!("{}?{ML_API}", datastore_path("mlw-vision", "curated"));
    let mut body = h.get(&path).await.json();
    body["properties"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    body["properties"]["isDefault"] = json!(true);
    let key2 = h.account_state("stmlshared01")["keys"]["key2"].clone();
    body["properties"]["credentials"]["secrets"] =
        json!({"secretsType": "AccountKey", "key": key2});
    assert_eq!(h.put(&path, &body).await.status, StatusCode::OK);

    let stored = &h.datastore_state("mlw-vision", "curated")["resource"]["properties"];
    assert!(stored.get("description").is_none(), "{stored:#}");
    assert_eq!(stored["tags"], json!({"team": "vision", "tier": "gold"}));
    assert_eq!(stored["isDefault"], false, "isDefault is read-only");
}

#[tokio::test]
async fn a_key_that_is_not_current_is_refused_without_being_echoed() {
    let h = Harness::demo().await;
    let path = format!("{}?{ML_API}", datastore_path("mlw-vision", "curated"));
    let datastore: Datastore = h.get(&path).await.parse();
    let stale =
        "c3RhbGUta2V5LXRoYXQtbm8tYWNjb3VudC1ob2xkcy0xMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTA=";
    let body = datastore
        .with_account_key(&SecretString::from(stale))
        .unwrap();
    let before = h.datastore_state("mlw-vision", "curated");

    let refused = h.put(&path, &put_body(&body)).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "UserError")
    );
    assert!(!refused.text.contains(stale));
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stmlshared01")
    );
    assert_eq!(h.datastore_state("mlw-vision", "curated"), before);

    let skipped = h
        .put(&format!("{path}&skipValidation=true"), &put_body(&body))
        .await;
    assert_eq!(skipped.status, StatusCode::OK);
    assert_eq!(
        h.datastore_state("mlw-vision", "curated")["secrets"]["key"],
        stale
    );
}

#[tokio::test]
async fn keys_are_validated_against_an_account_named_in_another_case() {
    let h = Harness::demo().await;
    let path = format!(
        "{}?{ML_API}",
        datastore_path("mlw-forecast", "shared_features")
    );
    let datastore: Datastore = h.get(&path).await.parse();
    assert_eq!(datastore.account_name(), Some("StMlShared01"));
    let other_key = h.account_state("stmlother02")["keys"]["key1"]
        .as_str()
        .unwrap()
        .to_string();
    let body = datastore
        .with_account_key(&SecretString::from(other_key))
        .unwrap();
    assert_eq!(
        h.put(&path, &put_body(&body)).await.status,
        StatusCode::BAD_REQUEST
    );
    let key2 = h.account_state("stmlshared01")["keys"]["key2"]
        .as_str()
        .unwrap()
        .to_string();
    let body = datastore
        .with_account_key(&SecretString::from(key2))
        .unwrap();
    assert_eq!(h.put(&path, &put_body(&body)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_writes_are_refused_with_user_errors() {
    let h = Harness::demo().await;
    let path = format!("{}?{ML_API}", datastore_path("mlw-vision", "new_store"));
    for body in [
        json!({}),
        json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c"}}),
        json!({"properties": {"credentials": {"credentialsType": "None"}}}),
        json!({"properties": {"datastoreType": "AzureBlob", "accountName": "a", "containerName": "c",
            "credentials": {"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey"}}}}),
    ] {
        let answer = h.put(&path, &body).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (StatusCode::BAD_REQUEST, "UserError"),
            "{body}"
        );
    }
    let not_json = h
        .http
        .put(h.url(&path))
        .bearer_auth(&h.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        h.workspace_state("mlw-vision")["datastores"]
            .as_array()
            .unwrap()
            .len()
            == 6
    );
}

#[tokio::test]
async fn secrets_are_listed_only_where_one_is_stored_and_deletes_are_recorded() {
    let h = Harness::demo().await;
    let identity = h
        .post(
            &format!(
                "{}/listSecrets?{ML_API}",
                datastore_path("mlw-vision", "images_identity")
            ),
            None,
        )
        .await;
    assert_eq!(identity.status, StatusCode::NOT_FOUND);
    let sp = h
        .post(
            &format!(
                "{}/listSecrets?{ML_API}",
                datastore_path("mlw-vision", "lake_sp")
            ),
            None,
        )
        .await;
    assert_eq!(sp.json()["secretsType"], "ServicePrincipal");
    assert!(sp.json()["clientSecret"].is_string());

    let path = format!(
        "{}?{ML_API}",
        datastore_path("mlw-forecast", "shared_features")
    );
    assert_eq!(
        h.send(Method::DELETE, &path, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.send(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(h.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        h.state()["deletedDatastores"],
        json!([datastore_path("mlw-forecast", "shared_features")])
    );
    assert_eq!(h.statuses_of("Datastores_Delete"), [200, 204]);
}

// ---------------------------------------------------------------------------------------------
// Faults and latency

#[tokio::test]
async fn throttling_answers_429_with_retry_after_then_recovers() {
    let h = Harness::demo().await;
    h.emulator.set_faults(vec![
        FaultRule {
            count: Some(2),
            retry_after_seconds: 3,
            ..FaultRule::new("StorageAccounts_ListKeys", FaultKind::Throttle)
        },
        FaultRule {
            count: Some(1),
            retry_after: Some(RetryAfterFormat::HttpDate),
            ..FaultRule::new("Workspaces_Get", FaultKind::Throttle)
        },
    ]);
    let path = format!("{}/listKeys?{STORAGE_API}", account_path("stmlshared01"));
    let first = h.post(&path, None).await;
    assert_eq!(
        (first.status, first.error_code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    assert_eq!(first.header("retry-after"), Some("3"));
    assert_eq!(
        h.post(&path, None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(h.post(&path, None).await.status, StatusCode::OK);
    assert_eq!(h.statuses_of("StorageAccounts_ListKeys"), [429, 429, 200]);

    let dated = h
        .get(&format!("{}?{ML_API}", workspace_path("mlw-vision")))
        .await;
    let when = httpdate::parse_http_date(dated.header("retry-after").unwrap()).unwrap();
    assert!(when > std::time::SystemTime::now());
}

#[tokio::test]
async fn server_errors_come_as_arm_json_or_gateway_html() {
    let h = Harness::demo().await;
    h.emulator.set_faults(vec![
        FaultRule {
            status: Some(502),
            html: true,
            count: Some(1),
            ..FaultRule::new("Datastores_List", FaultKind::Error)
        },
        FaultRule {
            status: Some(503),
            count: Some(1),
            ..FaultRule::new("Datastores_List", FaultKind::Error)
        },
    ]);
    let path = format!("{}/datastores?{ML_API}", workspace_path("mlw-vision"));
    let html = h.get(&path).await;
    assert_eq!(html.status, StatusCode::BAD_GATEWAY);
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.text.contains("<html>"));
    let json = h.get(&path).await;
    assert_eq!(
        (json.status, json.error_code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
    );
    assert_eq!(h.get(&path).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer_and_changes_nothing() {
    let h = Harness::demo().await;
    h.emulator.set_faults(vec![FaultRule {
        count: Some(1),
        ..FaultRule::new("StorageAccounts_RegenerateKey", FaultKind::Drop)
    }]);
    let before = h.account_state("stmlshared01");
    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlshared01")
    );
    let sent = h
        .http
        .post(h.url(&path))
        .bearer_auth(&h.token)
        .json(&json!({"keyName": "key1"}))
        .send()
        .await;
    let error = sent.expect_err("a dropped connection has no answer");
    assert!(!error.is_status(), "{error}");
    assert_eq!(h.account_state("stmlshared01"), before);
    assert_eq!(h.statuses_of("StorageAccounts_RegenerateKey"), [0]);

    regenerate(&h, "stmlshared01", "key1").await;
    assert_ne!(h.account_state("stmlshared01")["keys"], before["keys"]);
}

#[tokio::test]
async fn a_lost_answer_gets_no_answer_but_the_change_is_made() {
    let h = Harness::demo().await;
    h.emulator.set_faults(vec![FaultRule {
        count: Some(1),
        ..FaultRule::new("StorageAccounts_RegenerateKey", FaultKind::LoseAnswer)
    }]);
    let before = h.account_state("stmlshared01");
    let path = format!(
        "{}/regenerateKey?{STORAGE_API}",
        account_path("stmlshared01")
    );
    let sent = h
        .http
        .post(h.url(&path))
        .bearer_auth(&h.token)
        .json(&json!({"keyName": "key1"}))
        .send()
        .await;

    let error = sent.expect_err("a lost answer is no answer");
    assert!(!error.is_status(), "{error}");
    let after = h.account_state("stmlshared01");
    assert_ne!(after["keys"]["key1"], before["keys"]["key1"]);
    assert_eq!(after["keys"]["key2"], before["keys"]["key2"]);
    assert_eq!(after["regenerations"], 1);
    assert_eq!(h.statuses_of("StorageAccounts_RegenerateKey"), [0]);
}

#[tokio::test]
async fn seeded_fault_rates_repeat_for_the_same_requests() {
    async fn run() -> Vec<u16> {
        let rule =
            json!([{"operation": "*", "kind": "error", "status": 500, "rate": 0.4, "seed": 7}]);
        let h = Harness::start(demo_with(json!({"faults": rule}))).await;
        let path = format!("{}?{STORAGE_API}", account_path("stmlshared01"));
        for _ in 0..30 {
            h.get(&path).await;
        }
        h.statuses_of("StorageAccounts_GetProperties")
    }
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn delays_and_latency_slow_answers_down() {
    let h = Harness::demo().await;
    let path = format!("{}?{STORAGE_API}", account_path("stmlshared01"));
    h.emulator.set_faults(vec![FaultRule {
        delay_ms: 150,
        count: Some(1),
        ..FaultRule::new("*", FaultKind::Delay)
    }]);
    let started = Instant::now();
    assert_eq!(h.get(&path).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let answer = h
        .control(Method::POST, "latency", Some(&json!({"ms": 120})))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let started = Instant::now();
    h.msi_token("https://management.azure.com", None).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    let started = Instant::now();
    h.get(&path).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
}

// ---------------------------------------------------------------------------------------------
// Control surface

#[tokio::test]
async fn the_control_surface_sets_faults_and_the_clock_and_stays_out_of_the_log() {
    let h = Harness::demo().await;
    let rules = json!([{"operation": "Workspaces_Get", "kind": "conflict", "count": 1}]);
    assert_eq!(
        h.control(Method::POST, "faults", Some(&rules)).await.status,
        StatusCode::OK
    );
    let bad = json!([{"operation": "*", "kind": "error", "rate": 2.0}]);
    assert_eq!(
        h.control(Method::POST, "faults", Some(&bad)).await.status,
        StatusCode::BAD_REQUEST
    );
    let conflict = h
        .get(&format!("{}?{ML_API}", workspace_path("mlw-vision")))
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);

    let moved = h
        .control(
            Method::POST,
            "clock",
            Some(&json!({"now": "2027-03-01T00:00:00Z"})),
        )
        .await;
    assert!(
        moved.json()["now"]
            .as_str()
            .unwrap()
            .starts_with("2027-03-01T00:00:0")
    );
    regenerate(&h, "stmlshared01", "key2").await;
    let created = h.account_state("stmlshared01")["keyCreationTime"]["key2"].clone();
    assert!(
        created.as_str().unwrap().starts_with("2027-03-01T00:00:0"),
        "{created}"
    );
    let advanced = h
        .control(
            Method::POST,
            "clock",
            Some(&json!({"advanceSeconds": 86400})),
        )
        .await;
    assert!(
        advanced.json()["now"]
            .as_str()
            .unwrap()
            .starts_with("2027-03-02")
    );

    // The clock runs, so the two reads differ only in `now`.
    let without_now = |mut state: Value| {
        state.as_object_mut().unwrap().remove("now");
        state
    };
    let state = h.control(Method::GET, "state", None).await.json();
    assert_eq!(without_now(state), without_now(h.state()));
    let logged = h.control(Method::GET, "requests", None).await.json();
    let operations: Vec<&str> = logged
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        operations,
        ["Workspaces_Get", "StorageAccounts_RegenerateKey"]
    );
    assert_eq!(
        logged[1]["path"],
        format!("{}/regenerateKey", account_path("stmlshared01"))
    );
}

#[tokio::test]
async fn dropping_the_emulator_closes_the_port() {
    let h = Harness::demo().await;
    let url = h.url(&format!("{}?{STORAGE_API}", account_path("stmlshared01")));
    let Harness { emulator, http, .. } = h;
    drop(emulator);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http.get(&url).send().await.is_ok() {
        assert!(Instant::now() < deadline, "still answering after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutting_down_closes_the_port() {
    let h = Harness::demo().await;
    let url = h.url(&format!("{}?{STORAGE_API}", account_path("stmlshared01")));
    let Harness { emulator, http, .. } = h;
    emulator.shutdown().await;
    assert!(http.get(url).send().await.is_err());
}
