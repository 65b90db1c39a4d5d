//! The `Reconcile` function through the local host, forwarded as the Functions host does with
//! `enableForwardingHttpRequest`: the function key, plans and applies, bad bodies, unknown
//! accounts, the body limit, and the lock it shares with events.

use keysync::emulator::{FaultKind, FaultRule, Scenario};
use serde_json::{Value, json};

use crate::helpers::*;

/// How a request carries the function key.
#[derive(Clone, Copy)]
enum Key {
    Header,
    Query,
    Missing,
    Wrong,
}

struct Reply {
    status: u16,
    content_type: String,
    body: Value,
}

async fn post(app: &TestApp, key: Key, body: impl Into<reqwest::Body>) -> Reply {
    let mut url = app.host.http_url("reconcile");
    let mut request = reqwest::Client::new().post(url.clone());
    match key {
        Key::Header => request = request.header("x-functions-key", app.host.function_key()),
        Key::Query => {
            url.query_pairs_mut()
                .append_pair("code", app.host.function_key());
            request = reqwest::Client::new().post(url);
        }
        Key::Missing => {}
        Key::Wrong => request = request.header("x-functions-key", "not-the-key"),
    }
    let response = request
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the host answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        body,
    }
}

async fn post_json(app: &TestApp, key: Key, body: Value) -> Reply {
    post(app, key, body.to_string()).await
}

fn writes_since(app: &TestApp, before: usize) -> Vec<String> {
    app.writes()
        .into_iter()
        .skip(before)
        .map(|r| r.operation)
        .collect()
}

fn account_report<'a>(reply: &'a Reply, name: &str) -> &'a Value {
    reply.body["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|r| {
            r["account"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("no report for {name} in {:#}", reply.body))
}

/// A rejection's body is `{"error": "<one short line>"}` and nothing else.
fn assert_short_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{:#}", reply.body);
    assert!(reply.content_type.starts_with("application/json"));
    let object = reply.body.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "{:#}", reply.body);
    let message = object["error"].as_str().expect("an error string");
    assert!(message.len() < 400 && !message.contains('\n'), "{message}");
    assert!(
        !message.contains("panicked") && !message.contains("src/"),
        "{message}"
    );
}

#[tokio::test]
async fn without_the_function_key_the_host_answers_401_and_nothing_runs() {
    let app = TestApp::start(Scenario::demo()).await;
    for key in [Key::Missing, Key::Wrong] {
        let reply = post_json(&app, key, json!({"dryRun": false})).await;
        assert_eq!(reply.status, 401);
    }
    assert!(app.emulator.requests().is_empty());
    assert!(app.host.invocations().is_empty());
}

#[tokio::test]
async fn a_plan_reports_every_datastore_and_writes_nothing() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    let before = app.writes().len();

    let reply = post_json(&app, Key::Header, json!({"account": "StMlShared01"})).await;

    assert_eq!(reply.status, 200, "{:#}", reply.body);
    assert!(reply.content_type.starts_with("application/json"));
    assert_eq!(reply.body["dryRun"], true);
    assert_eq!(reply.body["outcome"], "ok");
    let report = account_report(&reply, "stmlshared01");
    let blob = entry(report, "mlw-vision", "workspaceblobstore");
    assert_eq!(
        (
            &blob["held"],
            &blob["action"],
            &blob["key"],
            &blob["outcome"]
        ),
        (
            &json!("stale"),
            &json!("updateKey"),
            &json!("key1"),
            &json!("planned")
        )
    );
    assert_eq!(entry(report, "mlw-vision", "curated")["held"], "key2");
    assert_eq!(
        entry(report, "mlw-vision", "images_identity")["reason"],
        "identity-based access: no key stored"
    );
    let workspace = workspace_entry(report, "mlw-vision").expect("workspace entry");
    assert_eq!(
        (&workspace["action"], &workspace["outcome"]),
        (&json!("resync"), &json!("planned"))
    );
    assert_eq!(writes_since(&app, before), Vec::<String>::new());

    let text = reply.body.to_string();
    for secret in app.state().secrets() {
        assert!(!text.contains(&secret), "a secret in the answer");
    }
}

#[tokio::test]
async fn an_apply_with_the_code_parameter_fixes_everything_once() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;

    let reply = post_json(
        &app,
        Key::Query,
        json!({"account": SHARED, "dryRun": false}),
    )
    .await;

    assert_eq!(reply.status, 200, "{:#}", reply.body);
    assert_eq!(reply.body["dryRun"], false);
    let report = account_report(&reply, "stmlshared01");
    assert_eq!(
        entry(report, "mlw-vision", "workspaceblobstore")["outcome"],
        "updated"
    );
    assert_eq!(
        entry(report, "mlw-forecast", "shared_features")["outcome"],
        "updated"
    );
    assert_eq!(
        workspace_entry(report, "mlw-vision").unwrap()["outcome"],
        "resynced"
    );
    let state = app.state();
    for (ws, ds) in [
        ("mlw-vision", "workspaceblobstore"),
        ("mlw-vision", "workspacefilestore"),
        ("mlw-forecast", "shared_features"),
    ] {
        assert_eq!(state.held(ws, ds, "stmlshared01"), "key1", "{ws}/{ds}");
    }

    let before = app.writes().len();
    let again = post_json(
        &app,
        Key::Header,
        json!({"account": SHARED, "dryRun": false}),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(writes_since(&app, before), Vec::<String>::new());
    assert_eq!(
        app.host.invocations().last().map(|r| r.function.as_str()),
        Some("Reconcile")
    );
}

#[tokio::test]
async fn an_empty_body_plans_the_whole_scope() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    let before = app.writes().len();

    let reply = post(&app, Key::Header, "").await;

    assert_eq!(reply.status, 200, "{:#}", reply.body);
    assert_eq!(reply.body["dryRun"], true);
    let mut names: Vec<&str> = reply.body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["account"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["stmlfresh03", "stmlother02", "stmlshared01"]);
    assert_eq!(
        entry(
            account_report(&reply, "stmlshared01"),
            "mlw-vision",
            "workspacefilestore"
        )["outcome"],
        "planned"
    );
    assert_eq!(writes_since(&app, before), Vec::<String>::new());
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_short_json_error() {
    let app = TestApp::start(Scenario::demo()).await;
    for body in [
        "not json",
        "[1, 2]",
        r#"{"dryRun": "yes"}"#,
        r#"{"acount": "stmlshared01"}"#,
        r#"{"account": ["stmlshared01"]}"#,
        r#"{"account": "a/b"}"#,
        r#"{"account": "st"}"#,
    ] {
        let reply = post(&app, Key::Header, body).await;
        assert_short_error(&reply, 400);
    }
    let unknown = post(&app, Key::Header, r#"{"acount": "x"}"#).await;
    assert!(
        unknown.body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `acount`")
    );
    assert!(app.writes().is_empty());
}

#[tokio::test]
async fn unknown_and_out_of_scope_accounts_get_404() {
    let app = TestApp::start(Scenario::demo()).await;
    let elsewhere = "/subscriptions/99999999-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stelsewhere";
    let gone = SHARED.replace("stmlshared01", "stgone01");
    for account in ["stnothere99", elsewhere, &gone] {
        let reply = post_json(
            &app,
            Key::Header,
            json!({"account": account, "dryRun": false}),
        )
        .await;
        assert_short_error(&reply, 404);
    }
    assert!(app.writes().is_empty());
}

#[tokio::test]
async fn looking_an_account_up_against_a_hung_listing_ends_at_the_runs_deadline() {
    let deadline = ("KEYSYNC_HTTP_DEADLINE_SECS".to_string(), "2".to_string());
    let options = Options {
        extra_env: vec![deadline],
        ..Options::default()
    };
    let app = TestApp::start_with(Scenario::demo(), options).await;
    app.emulator.set_faults(vec![fault(
        json!({"operation": "StorageAccounts_List", "kind": "delay", "delayMs": 120_000}),
    )]);

    let started = std::time::Instant::now();
    let reply = post_json(
        &app,
        Key::Header,
        json!({"account": "stmlshared01", "dryRun": false}),
    )
    .await;
    let took = started.elapsed();

    // Well past a 2 s deadline, and well short of the listing's 120 s or one request's 30 s.
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    assert_short_error(&reply, 503);
    let message = reply.body["error"].as_str().unwrap();
    assert!(
        message.starts_with("could not look the account up: StorageAccounts_List failed")
            && message.contains("ran out of time"),
        "{message}"
    );
    assert!(app.writes().is_empty());
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let app = TestApp::start(Scenario::demo()).await;
    let body = json!({"account": "x".repeat(100 * 1024)}).to_string();
    // Over Reconcile's own limit, far under that of an invocation.
    assert!(body.len() > keysync::handler::reconcile_http::MAX_BODY_BYTES);
    assert!(body.len() < keysync::handler::MAX_BODY_BYTES);
    let reply = post(&app, Key::Header, body).await;
    assert_short_error(&reply, 413);
    assert!(app.emulator.requests().is_empty());
}

#[tokio::test]
async fn another_method_is_not_routed_to_the_handler() {
    let app = TestApp::start(Scenario::demo()).await;
    let response = reqwest::Client::new()
        .get(app.host.http_url("reconcile"))
        .header("x-functions-key", app.host.function_key())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert!(app.host.invocations().is_empty());
}

#[tokio::test]
async fn a_failure_in_azure_gives_502_with_the_report_and_what_to_do() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    let mut forbidden = FaultRule::new("Datastores_CreateOrUpdate", FaultKind::Error);
    forbidden.status = Some(403);
    app.emulator.set_faults(vec![forbidden]);

    let reply = post_json(
        &app,
        Key::Header,
        json!({"account": "stmlshared01", "dryRun": false}),
    )
    .await;

    assert_eq!(reply.status, 502, "{:#}", reply.body);
    assert_eq!(reply.body["outcome"], "failed");
    let blob = entry(
        account_report(&reply, "stmlshared01"),
        "mlw-vision",
        "workspaceblobstore",
    );
    assert_eq!(blob["outcome"], "failed");
    let reason = blob["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "grant keysync's identity Microsoft.MachineLearningServices/workspaces/datastores/write"
        ),
        "{reason}"
    );
    // What lets an operator act and find the log line, but not Azure's own words, which for a
    // real 403 name the identity's object id: those are in the handler's log only.
    assert!(
        reason.starts_with("Datastores_CreateOrUpdate on /subscriptions/")
            && reason.contains("/datastores/workspaceblobstore failed: HTTP 403 Forbidden"),
        "{reason}"
    );
    let correlation = reason
        .split("(correlation id ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no correlation id in {reason}"));
    let azure_says = "The server encountered an error while processing the request";
    assert!(
        !reply.body.to_string().contains(azure_says),
        "{:#}",
        reply.body
    );
    let log = app.host.handler_output().join("\n");
    let detail = log
        .lines()
        .find(|l| l.contains("ARM call failed") && l.contains(correlation))
        .unwrap_or_else(|| panic!("no log line with correlation id {correlation}"));
    assert!(detail.contains(azure_says), "{detail}");
}

#[tokio::test]
async fn an_apply_and_an_event_for_the_same_account_write_each_datastore_once() {
    let app = TestApp::start(Scenario::demo()).await;
    app.regenerate(SHARED, "key1").await;
    let before = app.writes().len();

    let event = regeneration_event(SHARED);
    let (reply, record) = tokio::join!(
        post_json(
            &app,
            Key::Header,
            json!({"account": SHARED, "dryRun": false})
        ),
        app.deliver(&event)
    );

    assert_eq!(reply.status, 200, "{:#}", reply.body);
    assert!(record.succeeded());
    let writes = writes_since(&app, before);
    let updates = writes
        .iter()
        .filter(|op| *op == "Datastores_CreateOrUpdate")
        .count();
    let resyncs = writes
        .iter()
        .filter(|op| *op == "Workspaces_ResyncKeys")
        .count();
    assert_eq!((updates, resyncs), (3, 1), "{writes:?}");
}
