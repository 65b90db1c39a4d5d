use serde_json::json;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-20 09:00 UTC);
const WS: &str =
    "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w";

fn account() -> AccountFacts {
    AccountFacts {
        name: "stmlshared01".into(),
        endpoint_suffix: Some("core.windows.net".into()),
        shared_key_allowed: true,
        key_creation_time: KeyCreationTime {
            key1: Some(datetime!(2026-08-01 0:00 UTC)),
            key2: Some(datetime!(2026-05-01 0:00 UTC)),
        },
    }
}

fn datastore(
    name: &str,
    kind: &str,
    account: &str,
    secret: Option<SecretState>,
) -> ObservedDatastore {
    let ws = WorkspaceId::parse(WS).unwrap();
    let id = ws.datastore(name).unwrap();
    let datastore = serde_json::from_value(json!({
        "id": id.as_str(),
        "name": name,
        "properties": {
            "credentials": {"credentialsType": kind},
            "datastoreType": "AzureBlob",
            "accountName": account,
            "endpoint": "core.windows.net"
        }
    }))
    .unwrap();
    ObservedDatastore {
        id,
        datastore,
        secret,
    }
}

fn workspace(default_here: bool, datastores: Vec<ObservedDatastore>) -> ObservedWorkspace {
    ObservedWorkspace {
        id: WorkspaceId::parse(WS).unwrap(),
        default_storage_here: default_here,
        datastores: Ok(datastores),
        last_resynced_for: None,
    }
}

fn steps(plan: &Plan) -> Vec<(String, Option<Held>, Step)> {
    plan.workspaces[0]
        .datastores
        .iter()
        .map(|d| (d.id.name().to_string(), d.held, d.step.clone()))
        .collect()
}

fn in_sync() -> Step {
    Step::Leave {
        outcome: Outcome::InSync,
        reason: None,
        attention: false,
    }
}

#[test]
fn stale_and_missing_keys_move_to_the_newest_key_and_valid_ones_stay() {
    let ws = workspace(
        true,
        vec![
            datastore(
                "stale",
                "AccountKey",
                "stmlshared01",
                Some(SecretState::Stale),
            ),
            datastore(
                "missing",
                "AccountKey",
                "stmlshared01",
                Some(SecretState::Missing),
            ),
            datastore(
                "on_key2",
                "AccountKey",
                "stmlshared01",
                Some(SecretState::Current(KeySlot::Key2)),
            ),
        ],
    );
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    assert_eq!(plan.target, KeySlot::Key1);
    assert_eq!(
        steps(&plan),
        vec![
            (
                "stale".into(),
                Some(Held::Stale),
                Step::Update(KeySlot::Key1)
            ),
            (
                "missing".into(),
                Some(Held::Missing),
                Step::Update(KeySlot::Key1)
            ),
            ("on_key2".into(), Some(Held::Key2), in_sync()),
        ]
    );
    assert_eq!(plan.workspaces[0].resync, Some(ResyncDecision::Resync));
}

#[test]
fn rotation_moves_every_key_datastore_to_the_new_key() {
    let ws = workspace(
        false,
        vec![
            datastore(
                "on_key1",
                "AccountKey",
                "stmlshared01",
                Some(SecretState::Current(KeySlot::Key1)),
            ),
            datastore(
                "on_key2",
                "AccountKey",
                "stmlshared01",
                Some(SecretState::Current(KeySlot::Key2)),
            ),
        ],
    );
    let plan = plan(&account(), &[ws], Target::Exactly(KeySlot::Key2), NOW);
    assert_eq!(
        steps(&plan),
        vec![
            (
                "on_key1".into(),
                Some(Held::Key1),
                Step::Update(KeySlot::Key2)
            ),
            ("on_key2".into(), Some(Held::Key2), in_sync()),
        ]
    );
    assert_eq!(
        plan.workspaces[0].resync, None,
        "default storage is elsewhere"
    );
}

#[test]
fn other_credentials_and_other_accounts_are_skipped_with_a_reason() {
    let ws = workspace(
        true,
        vec![
            datastore("identity", "None", "stmlshared01", None),
            datastore("sp", "ServicePrincipal", "stmlshared01", None),
            datastore("sas", "Sas", "stmlshared01", None),
            datastore("weird", "KerberosKeytab", "stmlshared01", None),
            datastore("elsewhere", "AccountKey", "stother", None),
            datastore(
                "SAME_ACCOUNT_UPPER",
                "AccountKey",
                "STMLSHARED01",
                Some(SecretState::Current(KeySlot::Key1)),
            ),
        ],
    );
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    let reasons: Vec<(String, Outcome, String, bool)> = plan.workspaces[0]
        .datastores
        .iter()
        .filter_map(|d| match &d.step {
            Step::Leave {
                outcome,
                reason: Some(r),
                attention,
            } => Some((d.id.name().to_string(), *outcome, r.clone(), *attention)),
            _ => None,
        })
        .collect();
    let find = |name: &str| reasons.iter().find(|r| r.0 == name).cloned().unwrap();
    assert_eq!(find("identity").2, "identity-based access: no key stored");
    assert!(find("sp").2.starts_with("service principal"));
    // No key to write, and nobody to call yet: the storage check after the run says whether
    // the token works.
    assert_eq!(plan.workspaces[0].datastores[2].step, Step::SasToken);
    assert!(find("weird").3, "an unknown credentials type needs a human");
    assert!(find("weird").2.contains("'KerberosKeytab'"));
    assert_eq!(plan.workspaces[0].datastores[4].step, Step::OtherAccount);
    assert_eq!(plan.workspaces[0].datastores[5].step, in_sync());
}

#[test]
fn the_cloud_suffix_must_match_too() {
    let mut other_cloud = datastore("cn", "AccountKey", "stmlshared01", Some(SecretState::Stale));
    let mut raw = other_cloud.datastore.as_json().clone();
    raw["properties"]["endpoint"] = json!("core.chinacloudapi.cn");
    other_cloud.datastore = serde_json::from_value(serde_json::Value::Object(raw)).unwrap();
    assert!(!account().holds(&other_cloud.datastore));
    assert!(!account().needs_secret(&other_cloud.datastore));
}

/// A datastore of `datastore(...)` with its `endpoint` replaced, or removed for `None`.
fn with_endpoint(mut observed: ObservedDatastore, endpoint: Option<&str>) -> ObservedDatastore {
    let mut raw = observed.datastore.as_json().clone();
    match endpoint {
        Some(endpoint) => raw["properties"]["endpoint"] = json!(endpoint),
        None => {
            raw["properties"]
                .as_object_mut()
                .unwrap()
                .remove("endpoint");
        }
    }
    observed.datastore = serde_json::from_value(serde_json::Value::Object(raw)).unwrap();
    observed
}

/// The facts `reconcile::facts` makes of an account with a DNS-zone blob endpoint
/// (`https://<name>.zNN.blob.storage.azure.net/`), which shows no cloud suffix, for a keysync
/// talking to the ARM endpoint `arm`.
fn dns_zone_account(arm: &str) -> AccountFacts {
    let account: crate::model::storage::StorageAccount = serde_json::from_value(json!({
        "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/stmlshared01",
        "name": "stmlshared01",
        "properties": {"primaryEndpoints": {"blob": "https://stmlshared01.z12.blob.storage.azure.net/"}}
    }))
    .unwrap();
    let arm = url::Url::parse(arm).unwrap();
    crate::reconcile::facts(&account, crate::model::storage::cloud_storage_suffix(&arm))
}

#[test]
fn an_account_without_a_readable_suffix_takes_the_cloud_of_the_arm_endpoint() {
    let d = |name, endpoint| {
        let ds = datastore(name, "AccountKey", "stmlshared01", Some(SecretState::Stale));
        with_endpoint(ds, endpoint)
    };
    let ws = workspace(
        true,
        vec![
            d("right", Some("core.windows.net")),
            d("china", Some("core.chinacloudapi.cn")),
            d("lookalike", Some("core.windows.net.evil.com")),
            d("no_endpoint", None),
        ],
    );
    let public = dns_zone_account("https://management.azure.com");
    let plan = plan(&public, std::slice::from_ref(&ws), Target::Newest, NOW);
    let steps: Vec<(String, Step)> = steps(&plan).into_iter().map(|s| (s.0, s.2)).collect();
    assert_eq!(
        steps,
        vec![
            ("right".into(), Step::Update(KeySlot::Key1)),
            ("china".into(), Step::OtherAccount),
            ("lookalike".into(), Step::OtherAccount),
            ("no_endpoint".into(), Step::Update(KeySlot::Key1)),
        ]
    );

    let china = dns_zone_account("https://management.chinacloudapi.cn");
    let held: Vec<bool> = ws
        .datastores
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| china.holds(&d.datastore))
        .collect();
    assert_eq!(held, [false, true, false, true]);
}

#[test]
fn an_account_of_an_unknown_cloud_holds_only_datastores_that_name_no_endpoint() {
    let facts = dns_zone_account("https://management.example.com");
    let d = |endpoint| {
        let ds = datastore("d", "AccountKey", "stmlshared01", Some(SecretState::Stale));
        with_endpoint(ds, endpoint).datastore
    };
    assert!(!facts.holds(&d(Some("core.windows.net"))));
    assert!(!facts.holds(&d(Some("core.chinacloudapi.cn"))));
    assert!(facts.holds(&d(None)));
}

#[test]
fn an_emulator_account_on_loopback_still_holds_its_public_cloud_datastores() {
    let account: crate::model::storage::StorageAccount = serde_json::from_value(json!({
        "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/stmlshared01",
        "name": "stmlshared01",
        "properties": {"primaryEndpoints": {"blob": "http://127.0.0.1:10000/stmlshared01/"}}
    }))
    .unwrap();
    let arm = url::Url::parse("http://127.0.0.1:40000").unwrap();
    let facts =
        crate::reconcile::facts(&account, crate::model::storage::cloud_storage_suffix(&arm));
    let ds = datastore("d", "AccountKey", "stmlshared01", None);
    assert!(facts.holds(&ds.datastore));
    let foreign = with_endpoint(ds, Some("core.usgovcloudapi.net"));
    assert!(!facts.holds(&foreign.datastore));
}

#[test]
fn shared_key_disabled_writes_nothing() {
    let mut facts = account();
    facts.shared_key_allowed = false;
    let ws = workspace(
        true,
        vec![datastore(
            "stale",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Stale),
        )],
    );
    let plan = plan(&facts, &[ws], Target::Newest, NOW);
    assert!(
        matches!(&steps(&plan)[0].2, Step::Leave { outcome: Outcome::Skipped, attention: true, reason: Some(r) } if r.contains("shared-key access is disabled"))
    );
    assert!(!facts.needs_secret(&datastore("x", "AccountKey", "stmlshared01", None).datastore));
}

#[test]
fn unreadable_secrets_fail_instead_of_guessing() {
    let ws = workspace(
        false,
        vec![datastore(
            "d",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Unreadable("HTTP 403".into())),
        )],
    );
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    assert!(matches!(&steps(&plan)[0].2, Step::Fail(r) if r.contains("HTTP 403")));
}

#[test]
fn a_key_the_deadline_kept_from_being_read_is_deferred_not_failed() {
    let ws = workspace(
        false,
        vec![datastore(
            "d",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Deferred),
        )],
    );
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    assert!(matches!(
        &steps(&plan)[0].2,
        Step::Leave { outcome: Outcome::Deferred, reason: Some(r), .. } if r.contains("deadline")
    ));
}

#[test]
fn workspaces_with_nothing_on_the_account_are_left_out() {
    let ws = workspace(
        false,
        vec![datastore("elsewhere", "AccountKey", "stother", None)],
    );
    assert!(
        plan(&account(), &[ws], Target::Newest, NOW)
            .workspaces
            .is_empty()
    );
}

#[test]
fn a_fresh_key_triggers_a_resync_once() {
    let mut facts = account();
    facts.key_creation_time.key2 = Some(NOW - Duration::minutes(2));
    let mut ws = workspace(
        true,
        vec![datastore(
            "ok",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Current(KeySlot::Key1)),
        )],
    );
    let first = plan(&facts, std::slice::from_ref(&ws), Target::Newest, NOW);
    assert_eq!(first.workspaces[0].resync, Some(ResyncDecision::Resync));

    ws.last_resynced_for = facts.newest_key_time();
    let second = plan(&facts, &[ws], Target::Newest, NOW);
    assert!(matches!(
        second.workspaces[0].resync,
        Some(ResyncDecision::UpToDate(_))
    ));
}

#[test]
fn an_old_key_with_everything_in_sync_needs_no_resync() {
    let ws = workspace(
        true,
        vec![datastore(
            "ok",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Current(KeySlot::Key1)),
        )],
    );
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    assert!(
        matches!(&plan.workspaces[0].resync, Some(ResyncDecision::UpToDate(r)) if r.contains("over an hour"))
    );
}

#[test]
fn a_listing_failure_keeps_the_workspace_in_the_plan() {
    let mut ws = workspace(false, vec![]);
    ws.datastores = Err("HTTP 503".into());
    let plan = plan(&account(), &[ws], Target::Newest, NOW);
    assert_eq!(
        plan.workspaces[0].listing_error.as_deref(),
        Some("HTTP 503")
    );
}

#[test]
fn keys_with_no_recorded_creation_time_need_no_resync_and_say_why() {
    let mut facts = account();
    facts.key_creation_time.key1 = None;
    facts.key_creation_time.key2 = None;
    let ws = workspace(
        true,
        vec![datastore(
            "ok",
            "AccountKey",
            "stmlshared01",
            Some(SecretState::Current(KeySlot::Key1)),
        )],
    );
    let plan = plan(&facts, &[ws], Target::Newest, NOW);
    assert_eq!(
        plan.workspaces[0].resync,
        Some(ResyncDecision::UpToDate(
            "Azure records no creation time for either key, so neither was regenerated since it \
             began to: nothing new for the workspace"
                .into()
        ))
    );
}
