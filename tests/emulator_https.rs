//! The emulator over HTTPS: a client that trusts only the certificate the emulator hands out
//! gets tokens, lists and long-running operations there, and every absolute link it is given
//! leads back to the HTTPS listener it used, while the plain listener keeps its http links. The
//! requests the Azure ML Python SDK makes for the benchmark's baseline are served as it sends them.

use keysync::emulator::{EmulatorOptions, FaultKind, FaultRule, RunningEmulator, Scenario};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "shared/environment.rs"]
mod environment;

const GROUP: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml";
const SUBSCRIPTION: &str = "/subscriptions/11111111-2222-3333-4444-555555555555";
const WORKSPACE: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/mlw-vision";
/// The api-version the Azure ML Python SDK lists datastores and resyncs keys with.
const SDK_API: &str = "api-version=2024-10-01-preview";

struct Https {
    emulator: RunningEmulator,
    /// Trusts the emulator's certificate and nothing else.
    client: reqwest::Client,
    base: reqwest::Url,
    token: String,
}

impl Https {
    async fn start() -> Https {
        let options = EmulatorOptions {
            https: true,
            ..EmulatorOptions::default()
        };
        let emulator = RunningEmulator::start(Scenario::demo(), options)
            .await
            .unwrap();
        let pem = emulator
            .certificate_pem()
            .expect("a certificate with https");
        let certificate = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([certificate])
            .build()
            .unwrap();
        let base = emulator.https_url().expect("an https url with https");
        let mut https = Https {
            emulator,
            client,
            base,
            token: String::new(),
        };
        https.token = https.msi_token().await;
        https
    }

    fn setting(&self, name: &str) -> String {
        let env = self.emulator.env();
        env.into_iter().find(|(n, _)| n == name).unwrap().1
    }

    /// A managed identity token from `/msi/token` on the HTTPS listener.
    async fn msi_token(&self) -> String {
        let mut url = self.base.join("/msi/token").unwrap();
        url.query_pairs_mut()
            .append_pair("api-version", "2019-08-01")
            .append_pair("resource", "https://management.azure.com");
        let answer = self
            .client
            .get(url)
            .header("X-IDENTITY-HEADER", self.setting("IDENTITY_HEADER"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn send(&self, method: reqwest::Method, url: &str) -> reqwest::Response {
        self.send_json(method, url, None).await
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    fn url(&self, path_and_query: &str) -> String {
        self.base.join(path_and_query).unwrap().to_string()
    }
}

fn origin(url: &reqwest::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

#[tokio::test]
async fn datastores_list_over_https_with_https_next_links_on_the_same_port() {
    let h = Https::start().await;
    let mut url = h.url(&format!("{WORKSPACE}/datastores?{SDK_API}&count=4"));
    let mut names = Vec::new();
    let mut pages = 0;
    while !url.is_empty() {
        let answer = h.send(reqwest::Method::GET, &url).await;
        assert_eq!(answer.status(), StatusCode::OK, "{url}");
        let page: Value = answer.json().await.unwrap();
        for item in page["value"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        url = page["nextLink"].as_str().unwrap_or_default().to_string();
        if !url.is_empty() {
            let link = reqwest::Url::parse(&url).unwrap();
            assert_eq!(origin(&link), origin(&h.base), "{url}");
        }
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(names.len(), 6, "{names:?}");
}

#[tokio::test]
async fn a_resync_over_https_is_polled_at_an_https_location() {
    let h = Https::start().await;
    let answer = h
        .send(
            reqwest::Method::POST,
            &h.url(&format!("{WORKSPACE}/resyncKeys?{SDK_API}")),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let mut location = answer.headers()["location"].to_str().unwrap().to_string();
    for _ in 0..5 {
        let link = reqwest::Url::parse(&location).unwrap();
        assert_eq!(origin(&link), origin(&h.base), "{location}");
        let poll = h.send(reqwest::Method::GET, &location).await;
        if poll.status() == StatusCode::OK {
            let workspaces = h.emulator.state()["workspaces"].clone();
            assert_eq!(workspaces[0]["resyncsCompleted"], 1);
            return;
        }
        assert_eq!(poll.status(), StatusCode::ACCEPTED);
        location = poll.headers()["location"].to_str().unwrap().to_string();
    }
    panic!("the resync never completed");
}

#[tokio::test]
async fn links_follow_the_loopback_name_the_client_used() {
    let h = Https::start().await;
    let mut base = h.base.clone();
    base.set_host(Some("localhost")).unwrap();
    let url = base
        .join(&format!("{WORKSPACE}/datastores?{SDK_API}&count=4"))
        .unwrap();
    let page: Value = h
        .send(reqwest::Method::GET, url.as_str())
        .await
        .json()
        .await
        .unwrap();
    let next = reqwest::Url::parse(page["nextLink"].as_str().unwrap()).unwrap();
    assert_eq!(origin(&next), origin(&base));
}

#[tokio::test]
async fn the_plain_listener_keeps_http_links() {
    let h = Https::start().await;
    let plain = h.emulator.base_url();
    let url = plain
        .join(&format!("{WORKSPACE}/datastores?{SDK_API}&count=4"))
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = http.get(url).bearer_auth(&h.token).send().await.unwrap();
    let page: Value = answer.json().await.unwrap();
    let next = reqwest::Url::parse(page["nextLink"].as_str().unwrap()).unwrap();
    assert_eq!(origin(&next), origin(&plain));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let h = Https::start().await;
    let other = RunningEmulator::start(
        Scenario::demo(),
        EmulatorOptions {
            https: true,
            ..EmulatorOptions::default()
        },
    )
    .await
    .unwrap();
    // A certificate of another run is no proof for this one.
    let foreign = other.certificate_pem().unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(foreign.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let sent = client.get(h.url("/_emulator/state")).send().await;
    let error = sent.expect_err("the handshake fails");
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn a_drop_fault_closes_a_tls_connection_without_an_answer() {
    let h = Https::start().await;
    h.emulator.set_faults(vec![FaultRule {
        count: Some(1),
        ..FaultRule::new("Datastores_List", FaultKind::Drop)
    }]);
    let url = h.url(&format!("{WORKSPACE}/datastores?{SDK_API}"));
    let sent = h.client.get(&url).bearer_auth(&h.token).send().await;
    let error = sent.expect_err("a dropped connection has no answer");
    assert!(!error.is_status(), "{error}");
    let statuses: Vec<u16> = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.operation == "Datastores_List")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [0]);
    assert_eq!(
        h.send(reqwest::Method::GET, &url).await.status(),
        StatusCode::OK
    );
}

/// The requests `scripts/bench/sdk_procedure.py` makes through azure-ai-ml 1.35.2, with the
/// query parameters and body shapes the SDK sends (captured from a run against the emulator).
#[tokio::test]
async fn the_python_sdk_procedure_requests_are_served_over_https() {
    let h = Https::start().await;
    let account = format!("{GROUP}/providers/Microsoft.Storage/storageAccounts/stmlshared01");
    let keys: Value = h
        .send(
            reqwest::Method::POST,
            &h.url(&format!("{account}/listKeys?api-version=2025-08-01")),
        )
        .await
        .json()
        .await
        .unwrap();
    let key1 = keys["keys"][0]["value"].as_str().unwrap().to_string();

    let workspaces = h.url(&format!(
        "{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices/workspaces?{SDK_API}"
    ));
    let listed: Value = h
        .send(reqwest::Method::GET, &workspaces)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 2);
    let storage = listed["value"][0]["properties"]["storageAccount"].as_str();
    assert!(storage.unwrap().eq_ignore_ascii_case(&account));

    // The SDK always sends orderByAsc, without orderBy: the stored order stays.
    let datastores = h.url(&format!(
        "{WORKSPACE}/datastores?{SDK_API}&count=30&orderByAsc=false"
    ));
    let page: Value = h
        .send(reqwest::Method::GET, &datastores)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["workspaceblobstore", "workspacefilestore"]);
    assert!(page.get("nextLink").is_none());

    // What the SDK's AzureBlobDatastore entity writes back: no `properties`, no
    // `serviceDataAccessAuthIdentity`; they are gone from the stored datastore.
    let body = json!({"properties": {
        "accountName": "stmlshared01", "containerName": "curated",
        "credentials": {"credentialsType": "AccountKey",
                        "secrets": {"secretsType": "AccountKey", "key": key1}},
        "endpoint": "core.windows.net", "protocol": "https",
        "tags": {"team": "vision", "tier": "gold"},
        "description": "Curated training images, reviewed weekly", "datastoreType": "AzureBlob"
    }});
    let put = h.url(&format!(
        "{WORKSPACE}/datastores/curated?{SDK_API}&skipValidation=true"
    ));
    let written = h.send_json(reqwest::Method::PUT, &put, Some(&body)).await;
    assert_eq!(written.status(), StatusCode::OK);
    let state = h.emulator.state();
    let curated = &state["workspaces"][0]["datastores"][2];
    assert_eq!(curated["secrets"]["key"], json!(key1));
    let properties = &curated["resource"]["properties"];
    assert!(properties.get("properties").is_none(), "{properties}");
    assert!(properties.get("serviceDataAccessAuthIdentity").is_none());

    let resync = h.url(&format!("{WORKSPACE}/resyncKeys?{SDK_API}"));
    let accepted = h.send(reqwest::Method::POST, &resync).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert!(
        accepted.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://")
    );
}

#[tokio::test]
async fn without_the_option_there_is_no_https_listener() {
    let emulator = RunningEmulator::start(Scenario::demo(), EmulatorOptions::default())
        .await
        .unwrap();
    assert!(emulator.https_url().is_none());
    assert!(emulator.certificate_pem().is_none());
}

/// `keysync emulator --https` prints its usual four lines, then the HTTPS URL and a CA file
/// that lets a client in, and removes the file when stopped.
#[tokio::test]
async fn the_cli_prints_the_https_url_and_a_ca_file_it_removes_on_stop() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::from(environment::keysync())
        // The example scenario flags no account for Azurite, so none is started.
        .args(["emulator", "--https", "--scenario"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/example.json"
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut settings = Vec::new();
    while settings.len() < 6 {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("six settings lines");
        let (name, value) = line.split_once('=').unwrap();
        settings.push((name.to_string(), value.to_string()));
    }
    let names: Vec<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "KEYSYNC_ARM_ENDPOINT",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "KEYSYNC_SUBSCRIPTIONS",
            "KEYSYNC_EMULATOR_HTTPS",
            "KEYSYNC_EMULATOR_CA_FILE"
        ]
    );
    let https = &settings[4].1;
    let ca_file = std::path::PathBuf::from(&settings[5].1);
    assert!(https.starts_with("https://127.0.0.1:"), "{https}");

    let pem = std::fs::read(&ca_file).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let state = client
        .get(format!("{https}/_emulator/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(state.status(), StatusCode::OK);

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(!ca_file.exists(), "{} is left behind", ca_file.display());
}
