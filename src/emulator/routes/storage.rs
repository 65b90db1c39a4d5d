//! Storage account operations: list, get, `listKeys` and `regenerateKey`.

use axum::http::StatusCode;
use serde_json::Value;

use super::path::{Named, Scope};
use super::{Call, Outcome, list_page, resolve};
use crate::emulator::events::KeyRegenerated;
use crate::emulator::reply::Reply;
use crate::emulator::resources::Account;
use crate::emulator::state::State;
use crate::model::storage::KeySlot;

/// `StorageAccounts_List` and `StorageAccounts_ListByResourceGroup`, paged.
pub(super) fn list(state: &State, call: &Call, scope: &Scope) -> Reply {
    let items = state
        .accounts
        .iter()
        .filter(|a| resolve::in_scope(a.id.resource_id(), scope))
        .map(Account::resource)
        .collect();
    list_page(call, items, state.settings.accounts_page_size)
}

/// `StorageAccounts_GetProperties`.
pub(super) fn get(state: &State, account: &Named) -> Reply {
    match resolve::account(state, account) {
        Ok(i) => Reply::ok(state.accounts[i].resource()),
        Err(reply) => reply,
    }
}

/// `StorageAccounts_ListKeys`; `$expand=kerb` adds the Kerberos keys.
pub(super) fn list_keys(state: &State, call: &Call, account: &Named) -> Reply {
    let kerb = call
        .query
        .get("$expand")
        .is_some_and(|v| v.eq_ignore_ascii_case("kerb"));
    match resolve::account(state, account) {
        Ok(i) => Reply::ok(state.accounts[i].key_list(kerb)),
        Err(reply) => reply,
    }
}

/// `StorageAccounts_RegenerateKey`: replaces the key, answers the new key list, and queues the
/// Event Grid event.
pub(super) fn regenerate(state: &mut State, call: &Call, account: &Named) -> Outcome {
    let index = match resolve::account(state, account) {
        Ok(i) => i,
        Err(reply) => return reply.into(),
    };
    let slot = match key_name(call.body) {
        Ok(slot) => slot,
        Err(reply) => return reply.into(),
    };
    let at = state.clock.now();
    let replaced = state.accounts[index].key(slot).to_string();
    state.accounts[index].regenerate(slot, at);
    let invalidated = state.datastores_holding(&replaced);
    state.key_invalidations.push(serde_json::json!({
        "account": state.accounts[index].id.as_str(),
        "key": slot.as_str(),
        "at": super::super::clock::azure_time(at),
        "datastores": invalidated,
    }));
    tracing::info!(account = state.accounts[index].name(), key = %slot, "key regenerated");

    let account = &state.accounts[index];
    let url = call.url();
    let client_ip = call.peer.to_string();
    let event = KeyRegenerated {
        account: &account.id,
        tenant: &state.settings.tenant_id,
        caller: call.caller,
        correlation_id: &call.ids.correlation_id,
        client_request_id: call
            .ids
            .client_request_id
            .as_deref()
            .unwrap_or(&call.ids.request_id),
        url: &url,
        client_ip: &client_ip,
        at,
    }
    .event();
    let reply = Reply::ok(account.key_list(false));
    let record = event.record(&account.id);
    state.events.push(record);
    Outcome {
        event: Some(event),
        ..reply.into()
    }
}

/// Reads `{"keyName": "key1" | "key2"}` (property name and value ignore case).
fn key_name(body: &[u8]) -> Result<KeySlot, Reply> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        )
    })?;
    value
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("keyName")))
        .and_then(|(_, v)| v.as_str())
        .and_then(KeySlot::from_name)
        .ok_or_else(|| {
            Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidValuesForRequestParameters",
                "Values for request parameters are invalid: keyName. Expected key1 or key2.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_ignore_case_and_anything_else_is_refused() {
        assert_eq!(
            key_name(br#"{"keyName": "KEY2"}"#).ok(),
            Some(KeySlot::Key2)
        );
        assert_eq!(
            key_name(br#"{"keyname": "key1"}"#).ok(),
            Some(KeySlot::Key1)
        );
        for bad in [&br#"{"keyName": "kerb1"}"#[..], b"{}", b"key1", b""] {
            assert_eq!(key_name(bad).unwrap_err().status(), StatusCode::BAD_REQUEST);
        }
    }
}
