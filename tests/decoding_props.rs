//! Property tests: no input, however malformed, makes the decoding of invocations, events or
//! timer payloads panic, and no event outside the scope or naming anything but a storage account
//! asks for a reconcile.

use keysync::events::{self, Decision};
use keysync::handler::envelope::Invocation;
use keysync::handler::timer::TimerInfo;
use keysync::resource_id::StorageAccountId;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const SUB: &str = "11111111-2222-3333-4444-555555555555";

/// Any JSON value, a few levels deep, with strings that look like the fields events carry.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        any::<String>(),
        Just("Microsoft.Resources.ResourceActionSuccess".to_string()),
        Just("Microsoft.Storage/storageAccounts/regenerateKey/action".to_string()),
        Just(format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stx"
        )),
        "[a-zA-Z/{}\"\\\\:.]{0,40}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("eventType".to_string()),
            Just("type".to_string()),
            Just("specversion".to_string()),
            Just("subject".to_string()),
            Just("data".to_string()),
            Just("operationName".to_string()),
            Just("resourceUri".to_string()),
            Just("status".to_string()),
            Just("Data".to_string()),
            Just("event".to_string()),
            Just("timer".to_string()),
            Just("ScheduleStatus".to_string()),
            Just("IsPastDue".to_string()),
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner.clone()), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
            inner.prop_map(|v| Value::String(v.to_string())),
        ]
    })
}

fn in_scope(sub: &str) -> bool {
    sub.eq_ignore_ascii_case(SUB)
}

/// Resource ids close to one another: storage accounts in and out of scope that share a
/// subscription, group or name with the fixture's, in any case, with a trailing slash, or a
/// child resource of one of them, so that a subject and a resource URI often nearly agree.
fn account_like_id() -> impl Strategy<Value = String> {
    let sub = prop_oneof![
        3 => Just(SUB.to_string()),
        1 => Just("99999999-2222-3333-4444-555555555555".to_string()),
    ];
    let group = prop_oneof![Just("rg-ml"), Just("rg-other")];
    let name = prop_oneof![
        Just("stmlshared01"),
        Just("stmlother02"),
        Just("stmlshared011")
    ];
    let tail = prop_oneof![
        4 => Just(""),
        1 => Just("/"),
        1 => Just("/blobServices/default"),
    ];
    let provider = prop_oneof![
        4 => Just("Microsoft.Storage/storageAccounts"),
        1 => Just("Microsoft.ClassicStorage/storageAccounts"),
    ];
    (sub, group, provider, name, tail, any::<bool>()).prop_map(
        |(sub, group, provider, name, tail, upper)| {
            let id = format!(
                "/subscriptions/{sub}/resourceGroups/{group}/providers/{provider}/{name}{tail}"
            );
            if upper { id.to_uppercase() } else { id }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_envelope_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(invocation) = Invocation::parse(&bytes) {
            let _ = invocation.binding("event");
        }
    }

    /// The host's real envelope, cut short, with bytes overwritten or inserted: nearly valid
    /// input, which random bytes almost never are. Whatever still decodes reconciles at most the
    /// in-scope storage account the fixture names.
    #[test]
    fn a_damaged_real_envelope_never_panics_and_names_no_other_account(
        cut in any::<prop::sample::Index>(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..6),
    ) {
        let mut bytes = include_bytes!("fixtures/azure-contract/events/envelope_eventgrid_object.json").to_vec();
        for (at, byte, insert) in damage {
            let at = at.index(bytes.len());
            match insert {
                true => bytes.insert(at, byte),
                false => bytes[at] = byte,
            }
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let Ok(invocation) = Invocation::parse(&bytes) else { return Ok(()) };
        let Ok(value) = invocation.binding("event") else { return Ok(()) };
        let Ok(events) = events::decode(value) else { return Ok(()) };
        for event in events {
            if let Decision::Reconcile(account) = event.decide(in_scope) {
                prop_assert!(in_scope(account.subscription()));
                prop_assert!(account.resource_id().is_type("Microsoft.Storage/storageAccounts"));
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_reconciles_only_in_scope_storage_accounts(value in json_value()) {
        let envelope = json!({"Data": {"event": value.clone(), "timer": value.clone()}});
        let invocation = Invocation::parse(envelope.to_string().as_bytes()).expect("an object with Data");
        let _ = TimerInfo::read(invocation.binding("timer").unwrap_or(&Value::Null));
        let Ok(events) = events::decode(&value) else { return Ok(()) };
        for event in events {
            if let Decision::Reconcile(account) = event.decide(in_scope) {
                prop_assert!(in_scope(account.subscription()));
                prop_assert!(account.resource_id().is_type("Microsoft.Storage/storageAccounts"));
            }
        }
    }

    /// `data.resourceUri` is the field keysync trusts. A subject that names anything else (another
    /// account, in or out of scope, or a child resource) never widens what keysync acts on: the
    /// only account it ever reconciles is the one the resource URI names, and only when the
    /// subject agrees (a disagreeing subject was not written by ARM, so the event is ignored).
    /// An event whose two fields name the same in-scope account is not ignored.
    #[test]
    fn a_subject_that_disagrees_with_the_resource_uri_never_widens_the_target(
        resource_uri in account_like_id(),
        subject in account_like_id(),
        schema in prop_oneof![Just("regenerate_key_cloudevents.json"), Just("regenerate_key_egschema.json")],
    ) {
        let path = format!("{}/tests/fixtures/azure-contract/events/{schema}", env!("CARGO_MANIFEST_DIR"));
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut event = if fixture.is_array() { fixture[0].clone() } else { fixture };
        event["data"]["resourceUri"] = json!(resource_uri);
        event["subject"] = json!(subject);

        let decision = events::decode(&event).unwrap()[0].decide(in_scope);

        let trusted = StorageAccountId::parse(&resource_uri).ok();
        let named = StorageAccountId::parse(&subject).ok();
        match decision {
            Decision::Reconcile(account) => {
                prop_assert_eq!(Some(&account), trusted.as_ref(), "the target is the resource URI's account");
                prop_assert_eq!(Some(&account), named.as_ref(), "and the subject names the same account");
                prop_assert!(in_scope(account.subscription()));
            }
            Decision::Ignore(reason) => {
                let agree = trusted.is_some() && trusted == named;
                let in_scope_account = trusted.as_ref().is_some_and(|a| in_scope(a.subscription()));
                prop_assert!(!(agree && in_scope_account), "a genuine regeneration was ignored: {}", reason);
            }
        }
    }

    #[test]
    fn a_real_event_with_any_subject_reconciles_only_the_account_it_names(subject in json_value()) {
        let mut event: Value = serde_json::from_str(include_str!("fixtures/azure-contract/events/regenerate_key_cloudevents.json")).unwrap();
        event["subject"] = subject;
        let events = events::decode(&event).unwrap();
        if let Decision::Reconcile(account) = events[0].decide(in_scope) {
            prop_assert_eq!(account.name(), "stmlshared01");
        }
    }
}
