//! The secrets a test searches keysync's output for, taken from the emulator's state
//! (`GET /_emulator/state`): shared by the end-to-end tests (the handler's output) and the
//! command-line tests (the CLI's stdout and stderr).

use keysync::storage::sas::SasToken;
use serde_json::Value;

/// Every secret value `state` holds: the bearer tokens the emulator issued, both keys of every
/// account and every key a regeneration replaced, every stored datastore secret (keys, SAS
/// tokens, client secrets), and the signature of each SAS token on its own, as sent and
/// URL-encoded, since a token's other fields are no secret and may be shown.
pub fn secrets(state: &Value) -> Vec<String> {
    let mut out: Vec<String> = state["issuedTokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    for account in state["storageAccounts"].as_array().into_iter().flatten() {
        for slot in ["key1", "key2"] {
            out.extend(account["keys"][slot].as_str().map(str::to_string));
        }
        let retired = account["retiredKeys"].as_array().into_iter().flatten();
        out.extend(retired.filter_map(Value::as_str).map(str::to_string));
    }
    let workspaces = state["workspaces"].as_array().into_iter().flatten();
    for ds in workspaces.flat_map(|ws| ws["datastores"].as_array().into_iter().flatten()) {
        if let Some(secrets) = ds["secrets"].as_object() {
            out.extend(
                secrets
                    .values()
                    .filter_map(Value::as_str)
                    .filter(|v| v.len() > 16)
                    .map(str::to_string),
            );
        }
    }
    let signatures: Vec<String> = out.iter().filter_map(|s| signature(s)).collect();
    for sig in signatures {
        out.push(url::form_urlencoded::byte_serialize(sig.as_bytes()).collect());
        out.push(sig);
    }
    out
}

/// The `sig` of a SAS token, if `text` is one.
fn signature(text: &str) -> Option<String> {
    if !text.contains("sig=") {
        return None;
    }
    let token = SasToken::parse(text).ok()?;
    token.get("sig").map(str::to_string)
}

/// Fails when any of `secrets`, a bearer token's `Bearer ` prefix or the start of a token occurs
/// in `output`; `what` names the output without quoting the secret.
pub fn assert_none_in(output: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(!output.contains(secret.as_str()), "a secret reached {what}");
    }
    assert!(!output.contains("Bearer "), "a bearer token reached {what}");
    // `eyJ0eXAiOiJKV1Qi` starts every token the emulator issues (and Entra ID's): even part of
    // one is a leak.
    assert!(
        !output.contains("eyJ0eXAiOiJKV1Qi"),
        "the start of a bearer token reached {what}"
    );
}
