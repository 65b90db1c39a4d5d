//! `keysync demo --verbose`, the README's first command, run as a user runs it, with
//! `RUST_LOG=trace`: it exits 0, prints the outcome a user reads, and nothing it prints carries a
//! secret or an event claim.
//!
//! Secrets are looked for two ways. By value: while the demo runs, the test polls the emulator's
//! control surface (`/_emulator/state`, at the address the demo prints) for every key, stored
//! secret, issued token and the identity endpoint's secret. By shape, which also catches a secret
//! the polls missed: a storage key (88 base64 characters), a SAS signature (`sig=`), a bearer
//! token (`Bearer `, or a JWT, the shape of Entra ID's tokens and the emulator's), a Shared Key
//! signature, a connection string's key.
//!
//! Without Azurite the demo's storage checks would go to the demo accounts' real Azure hostnames,
//! so the demo turns them off; the test still runs it and checks that it says so (and skips the
//! SAS datastore it cannot check). `KEYSYNC_REQUIRE_AZURITE=1`, as `.ci/run` sets it, makes a
//! missing Azurite a failure instead.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keysync::emulator::azurite;
use keysync::storage::sas::SasToken;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

#[path = "shared/environment.rs"]
mod environment;

/// Values from the demo's portal user that reach the emulator's events as claims.
const CLAIMS: [&str; 2] = ["operator@example.com", "Operator Example"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_repairs_everything_and_prints_no_secret_at_trace_level() {
    let azurite = azurite_installed();

    let run = run_demo().await;

    assert!(
        run.success,
        "keysync demo failed:\n{}",
        user_lines(&run.stdout)
    );
    check_result(&user_lines(&run.stdout), azurite);
    let secrets = run.secrets;
    assert!(
        secrets.keys >= 6 && secrets.tokens >= 2 && secrets.identity_header,
        "the emulator's state was read too rarely: {} keys, {} tokens",
        secrets.keys,
        secrets.tokens
    );
    for (stream, lines) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(!lines.is_empty(), "the demo printed nothing on {stream}");
        for (n, line) in lines.iter().enumerate() {
            if let Some(kind) = secrets.values.iter().find(|s| line.contains(s.as_str())) {
                let kind = secrets.kind(kind);
                panic!("{stream} line {}: {kind} from the emulator's state", n + 1);
            }
            if let Some(kind) = secret_shape(line) {
                panic!("{stream} line {}: {kind}", n + 1);
            }
            if let Some(claim) = CLAIMS.iter().find(|c| line.contains(*c)) {
                panic!("{stream} line {}: the event claim '{claim}'", n + 1);
            }
        }
    }
}

/// What the demo printed, and the secrets seen in the emulator while it ran.
struct DemoRun {
    success: bool,
    stdout: Vec<String>,
    stderr: Vec<String>,
    secrets: Secrets,
}

async fn run_demo() -> DemoRun {
    let mut child = tokio::process::Command::from(environment::keysync())
        .args(["demo", "--verbose"])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keysync demo starts");
    let (emulator_tx, emulator_rx) = watch::channel(None);
    let stdout = collect(child.stdout.take().unwrap(), Some(emulator_tx));
    let stderr = collect(child.stderr.take().unwrap(), None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = tokio::spawn(poll_secrets(emulator_rx, stop_rx));

    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .expect("keysync demo finishes within 3 minutes")
        .expect("keysync demo runs");
    let _ = stop_tx.send(true);
    DemoRun {
        success: status.success(),
        stdout: stdout.await.unwrap(),
        stderr: stderr.await.unwrap(),
        secrets: poller.await.unwrap(),
    }
}

/// Reads every line of `stream`; on stdout, announces the emulator's address once printed.
fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    emulator: Option<watch::Sender<Option<String>>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut out = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let url = line
                .split_once("Local Azure emulator")
                .and_then(|(_, rest)| rest.split_whitespace().find(|w| w.starts_with("http")));
            if let (Some(tx), Some(url)) = (&emulator, url) {
                let _ = tx.send(Some(url.to_string()));
            }
            out.push(line);
        }
        out
    })
}

/// Every secret the emulator held while the demo ran, in each state read until `stop`.
async fn poll_secrets(
    mut emulator: watch::Receiver<Option<String>>,
    stop: watch::Receiver<bool>,
) -> Secrets {
    let mut secrets = Secrets::default();
    let Ok(url) = emulator.wait_for(Option::is_some).await.map(|u| u.clone()) else {
        return secrets;
    };
    let url = format!("{}/_emulator/state", url.unwrap().trim_end_matches('/'));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    while !*stop.borrow() {
        if let Ok(answer) = client.get(&url).send().await
            && let Ok(state) = answer.json::<Value>().await
        {
            secrets.add(&state);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    secrets
}

#[derive(Default)]
struct Secrets {
    values: BTreeSet<String>,
    key_values: BTreeSet<String>,
    token_values: BTreeSet<String>,
    keys: usize,
    tokens: usize,
    identity_header: bool,
}

impl Secrets {
    fn add(&mut self, state: &Value) {
        let strings = |v: &Value| v.as_str().map(str::to_string);
        for account in state["storageAccounts"].as_array().into_iter().flatten() {
            for slot in ["key1", "key2"] {
                self.key_values.extend(strings(&account["keys"][slot]));
            }
        }
        for token in state["issuedTokens"].as_array().into_iter().flatten() {
            self.token_values.extend(strings(token));
        }
        let datastores = state["workspaces"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|ws| ws["datastores"].as_array().into_iter().flatten());
        for ds in datastores {
            let secret = ds["secrets"].as_object().into_iter().flatten();
            // Everything but `secretsType`, which only names the kind.
            for (_, value) in secret.filter(|(name, _)| *name != "secretsType") {
                self.values.extend(strings(value));
                if let Some(sig) = value
                    .as_str()
                    .and_then(|v| SasToken::parse(v).ok())
                    .and_then(|t| t.get("sig").map(str::to_string))
                {
                    let encoded: String =
                        url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
                    self.values.extend([sig, encoded]);
                }
            }
        }
        if let Some(header) = strings(&state["identityHeader"]) {
            self.identity_header = true;
            self.values.insert(header);
        }
        self.keys = self.key_values.len();
        self.tokens = self.token_values.len();
        self.values.extend(self.key_values.iter().cloned());
        self.values.extend(self.token_values.iter().cloned());
    }

    /// What kind of secret `value` is, for a message that does not repeat it.
    fn kind(&self, value: &str) -> &'static str {
        if self.key_values.contains(value) {
            "a storage account key"
        } else if self.token_values.contains(value) {
            "a bearer token"
        } else {
            "a stored datastore secret or the identity header"
        }
    }
}

/// The kind of secret `line` seems to carry, by shape.
fn secret_shape(line: &str) -> Option<&'static str> {
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    let is_url64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let is_token = |c: char| is_url64(c) || matches!(c, '.' | '~' | '+' | '/');
    // A run of base64 characters ending where `=` padding starts: an 88-character storage key
    // (64 bytes) has 86 before its `==`.
    let mut run = 0;
    for c in line.chars() {
        if c == '=' && run >= 86 {
            return Some(
                "something shaped like a storage account key (86+ base64 characters and '=')",
            );
        }
        run = if is_base64(c) { run + 1 } else { 0 };
    }
    let followed_by = |marker: &str, ok: &dyn Fn(char) -> bool| {
        line.match_indices(marker)
            .any(|(at, _)| line[at + marker.len()..].chars().next().is_some_and(ok))
    };
    if followed_by("sig=", &|c| is_base64(c) || c == '%') {
        return Some("a SAS signature (sig=...)");
    }
    // A token after `Bearer `, not a challenge's `Bearer authorization_uri="..."`.
    let bearer = ["Bearer ", "bearer "].iter().any(|marker| {
        line.match_indices(marker).any(|(at, _)| {
            let rest = &line[at + marker.len()..];
            let token = rest.chars().take_while(|c| is_token(*c)).count();
            token >= 16 && !rest[token..].starts_with('=')
        })
    });
    if bearer {
        return Some("a bearer token (Bearer ...)");
    }
    let jwt = line.match_indices("eyJ").any(|(at, _)| {
        let rest = &line[at..];
        let head = rest.chars().take_while(|c| is_url64(*c)).count();
        head >= 12 && rest[head..].starts_with('.')
    });
    if jwt {
        return Some("a JWT, the shape of an access token (eyJ...)");
    }
    if line.match_indices("SharedKey ").any(|(at, _)| {
        let rest = &line[at + "SharedKey ".len()..];
        let name = rest.chars().take_while(char::is_ascii_alphanumeric).count();
        name >= 3 && rest[name..].starts_with(':') && rest[name + 1..].starts_with(is_base64)
    }) {
        return Some("a Shared Key signature (SharedKey account:...)");
    }
    if followed_by("AccountKey=", &is_base64) {
        return Some("a connection string's key (AccountKey=...)");
    }
    None
}

/// The lines of stdout a user reads: the log lines (`2026-01-01T...Z LEVEL ...`) left out, and
/// runs of spaces folded so that column widths do not matter.
fn user_lines(stdout: &[String]) -> String {
    let is_log = |line: &str| {
        let b = line.as_bytes();
        b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
    };
    stdout
        .iter()
        .filter(|l| !is_log(l))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The outcome as the demo tells it: the stale datastores updated in place, the workspace
/// resynced, the due account rotated, the echo of keysync's own regeneration ignored, and the
/// verdict.
fn check_result(text: &str, azurite: bool) {
    let after = text
        .split("After: datastores on storage account stmlshared01")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'After:' section in:\n{text}"));
    for line in [
        "workspaceblobstore stale updated to key1",
        "workspacefilestore stale updated to key1",
        "shared_features stale updated to key1",
        "curated key2 inSync",
        "images_identity skipped (identity-based access: no key stored)",
        "(workspace) resynced",
        "rotation of stmlother02: rotated",
        "rotation of stmlfresh03: left",
        "keysync's own regeneration came back as an event: HTTP 200, 0 writes to Azure\n",
        "Result: every AccountKey datastore on stmlshared01 holds a valid key",
        "the echo wrote nothing.",
    ] {
        assert!(text.contains(line), "'{line}' missing from:\n{text}");
    }
    for line in [
        "mlw-vision/workspaceblobstore AccountKey holds key1",
        "mlw-vision/workspacefilestore AccountKey holds key1",
        "mlw-vision/curated AccountKey holds key2",
        "mlw-forecast/shared_features AccountKey holds key1",
    ] {
        assert!(
            after.contains(line),
            "'{line}' missing after the repair:\n{after}"
        );
    }
    // What storage made of the credentials: Azurite's verdicts, or that checks were off.
    let storage = match azurite {
        true => [
            "workspaceblobstore stale updated to key1, storage verified",
            "exports_sas re-minted with key1, storage verified",
            "the dead SAS token was re-minted and works",
        ],
        false => [
            "storage checks are off",
            "exports_sas skipped (SAS token: no account key stored; not checked against storage",
            "the SAS datastore's token is still signed with the\nregenerated key",
        ],
    };
    for line in storage {
        assert!(text.contains(line), "'{line}' missing from:\n{text}");
    }
    assert!(!text.contains("Problem:"), "{text}");
}

/// Whether the demo will find Azurite (it looks where this does); `KEYSYNC_REQUIRE_AZURITE=1`, as
/// `.ci/run` sets it, makes its absence a failure.
fn azurite_installed() -> bool {
    let found = azurite::find(&[PathBuf::from(env!("CARGO_MANIFEST_DIR"))]).is_some();
    if !found && std::env::var("KEYSYNC_REQUIRE_AZURITE").is_ok_and(|v| v == "1") {
        panic!("Azurite is required (KEYSYNC_REQUIRE_AZURITE=1) but missing: run `npm ci`");
    }
    found
}

#[test]
fn the_shape_scan_catches_each_kind_of_secret_and_passes_the_demo_s_own_lines() {
    let key = format!(
        "{}==",
        "Ab1+/".repeat(18).chars().take(86).collect::<String>()
    );
    let leaks = [
        format!("key={key}"),
        format!("\"key1\": \"{key}\""),
        "GET /c?sv=2024-11-04&sig=abc%2Bdef%3D".to_string(),
        "authorization: Bearer abcdefghij.klmnopqrst".to_string(),
        "token=eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln".to_string(),
        "Authorization: SharedKey stmlshared01:c2lnbmF0dXJl".to_string(),
        "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=c2VjcmV0".to_string(),
    ];
    for leak in &leaks {
        assert!(secret_shape(leak).is_some(), "{leak}");
    }
    let innocent = [
        "exports_sas re-minted with key1, storage verified (replaced by a re-minted account SAS ss=b srt=co sp=rl spr=https,http se=2027-01-03T07:35:55Z)",
        "mlw-forecast/exports_sas SAS token signed with key1",
        "azureml-blobstore-3f1c2d4e-0000-4000-8000-000000000001",
        r#"{"access_token": "[hidden]", "token_type":"Bearer"}"#,
        "WWW-Authenticate: Bearer authorization_uri=\"https://login.microsoftonline.com/\"",
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01",
    ];
    for line in innocent {
        assert_eq!(secret_shape(line), None, "{line}");
    }
}
