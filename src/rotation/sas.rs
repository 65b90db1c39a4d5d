//! SAS tokens as consumers of the key that signed them. Before a rotation regenerates the standby
//! key, keysync reads the token of every SAS datastore on the account and signs its fields again
//! with each key to find the signer: a token signed with the standby key would die with it (the
//! rule is `decide::sas_guard`). With `KEYSYNC_REMINT_SAS`, such a token is first replaced by one
//! of the same scope signed with the active key, which the rotation keeps valid; the token is
//! re-minted as the storage check re-mints a dead one (`SasToken::remint`).

use std::time::Duration;

use futures::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::decide::{SasFinding, Signer};
use crate::arm::ArmClient;
use crate::model::ml::{CredentialsKind, Datastore};
use crate::model::storage::{AccountKeys, KeySlot};
use crate::reconcile::execute::{explain_update, reported, store_sas_token};
use crate::reconcile::plan::AccountFacts;
use crate::report::{Action, ObjectKind, Outcome, Report};
use crate::resource_id::{DatastoreId, WorkspaceId};
use crate::storage::sas::{self, SasKind, SasToken, SignedResource, format_time};
use crate::storage::shared_key::AccountKey;

/// A SAS datastore on the account, as a rotation found it. Holds its token: never log it.
pub(super) struct SasDatastore {
    id: DatastoreId,
    /// The datastore and its token, when both could be read.
    read: Option<(Datastore, SecretString)>,
    pub finding: SasFinding,
}

/// Why a token signed with the standby key was not re-minted.
pub(super) enum NotReminted {
    /// Nothing was written: keysync cannot make a token of the same scope.
    Cannot(String),
    /// Storing the re-minted token failed.
    Failed(String),
}

/// A token re-minted before the regeneration, for the rotation's report.
pub(super) struct Reminted {
    pub id: DatastoreId,
    /// The new token's scope (`account SAS ss=b ...`), never its signature.
    pub summary: String,
}

/// The SAS datastores on the account among a dry run's entries, each with the key that signed
/// its token.
pub(super) async fn read(
    arm: &ArmClient,
    facts: &AccountFacts,
    keys: &AccountKeys,
    dry_run: &Report,
) -> Vec<SasDatastore> {
    let now = OffsetDateTime::now_utc();
    let ids = dry_run
        .entries
        .iter()
        .filter(|e| e.kind == ObjectKind::Datastore && e.sas_token)
        .filter_map(|e| {
            let workspace = WorkspaceId::parse(&e.workspace).ok()?;
            workspace.datastore(e.datastore.as_deref()?).ok()
        });
    join_all(ids.map(|id| read_one(arm, facts, keys, id, now))).await
}

async fn read_one(
    arm: &ArmClient,
    facts: &AccountFacts,
    keys: &AccountKeys,
    id: DatastoreId,
    now: OffsetDateTime,
) -> SasDatastore {
    let datastore = format!("{}/{}", id.workspace().name(), id.name());
    let (signer, read) = match read_token(arm, &id).await {
        Err(why) => (Signer::Unknown(why), None),
        // Re-pointed or re-typed since the dry run: not a consumer of this account's keys.
        Ok((ds, _)) if !facts.holds(&ds) || ds.credentials_kind() != CredentialsKind::Sas => {
            (Signer::NotAConsumer, None)
        }
        Ok((_, None)) => (Signer::NotAConsumer, None),
        Ok((ds, Some(token))) => (
            signer(&token, &ds, &facts.name, keys, now),
            Some((ds, token)),
        ),
    };
    SasDatastore {
        id,
        read,
        finding: SasFinding { datastore, signer },
    }
}

/// The datastore (for the container or share its token is signed for) and its token, if any.
async fn read_token(
    arm: &ArmClient,
    id: &DatastoreId,
) -> Result<(Datastore, Option<SecretString>), String> {
    let ds = arm
        .get_datastore(id)
        .await
        .map_err(|e| format!("could not read the datastore: {}", reported(&e)))?;
    match arm.list_datastore_secrets(id).await {
        Ok(secrets) => Ok((ds, secrets.sas_token)),
        Err(e) if e.is_not_found() => Ok((ds, None)),
        Err(e) => Err(format!("could not read its token: {}", reported(&e))),
    }
}

/// Which current key signed `token`, the token of `ds` on the account `account`.
pub(super) fn signer(
    token: &SecretString,
    ds: &Datastore,
    account: &str,
    keys: &AccountKeys,
    now: OffsetDateTime,
) -> Signer {
    // Storage accepts no token without `sv`, `sig` and a scope.
    let Ok(token) = SasToken::parse(token.expose_secret()) else {
        return Signer::NotAConsumer;
    };
    let expired = token.expiry().is_some_and(|se| se <= now);
    if expired || token.kind() == Ok(SasKind::UserDelegation) {
        return Signer::NotAConsumer;
    }
    let resource = match signed_resource(ds, &token) {
        Ok(resource) => resource,
        Err(why) => return Signer::Unknown(why),
    };
    for slot in [KeySlot::Key1, KeySlot::Key2] {
        let Ok(key) = AccountKey::new(account, keys.get(slot)) else {
            return Signer::Unknown(format!("{slot} is not base64"));
        };
        match sas::is_signed_with(&token, &key, resource) {
            Ok(true) => return Signer::Key(slot),
            Ok(false) => {}
            Err(e) => return Signer::Unknown(e.to_string()),
        }
    }
    // Signed with a key regenerated since: dead already.
    Signer::NotAConsumer
}

/// The container or share `ds` names, which a service SAS of it is signed for.
fn signed_resource<'a>(ds: &'a Datastore, token: &SasToken) -> Result<SignedResource<'a>, String> {
    match (SignedResource::of(ds), token.kind()) {
        (Ok(resource), _) => Ok(resource),
        // An account SAS is not signed over a resource, so any will do.
        (Err(_), Ok(SasKind::Account)) => Ok(SignedResource::Container("")),
        (Err(why), _) => Err(format!("{why}, which its token would be for")),
    }
}

/// Replaces the token of `found` with one of the same scope signed with `active`, valid for
/// `lifetime`, stored in place.
pub(super) async fn remint(
    arm: &ArmClient,
    facts: &AccountFacts,
    keys: &AccountKeys,
    active: KeySlot,
    lifetime: Duration,
    found: &SasDatastore,
) -> Result<Reminted, NotReminted> {
    let Some((ds, token)) = &found.read else {
        return Err(NotReminted::Cannot("its token could not be read".into()));
    };
    let cannot = |why: String| NotReminted::Cannot(why);
    let old = SasToken::parse(token.expose_secret()).map_err(|e| cannot(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    if let Some(start) = old.start().filter(|st| *st > now) {
        let start = format_time(start);
        return Err(cannot(format!(
            "it is not valid before {start}, which a re-minted token would not keep"
        )));
    }
    let resource = signed_resource(ds, &old).map_err(cannot)?;
    let key = AccountKey::new(&facts.name, keys.get(active))
        .map_err(|_| cannot(format!("{active} is not base64")))?;
    let new = old
        .remint(&key, resource, now + lifetime)
        .map_err(|e| cannot(e.to_string()))?;
    store_sas_token(arm, &found.id, facts, &new)
        .await
        .map_err(|e| NotReminted::Failed(explain_update(e)))?;
    tracing::info!(
        datastore = found.id.name(),
        key = %active,
        outcome = "reminted",
        "SAS token, before the rotation"
    );
    let summary =
        SasToken::parse(new.expose_secret()).map_or_else(|_| old.summary(), |t| t.summary());
    Ok(Reminted {
        id: found.id.clone(),
        summary,
    })
}

/// Writes the re-mints done before the regeneration onto the rotation's report, whose storage
/// check saw only the new token.
pub(super) fn record(report: &mut Report, reminted: &[Reminted], standby: KeySlot) {
    let active = standby.other();
    for done in reminted {
        let workspace = done.id.workspace();
        let entry = report.entries.iter_mut().find(|e| {
            e.kind == ObjectKind::Datastore
                && e.datastore.as_deref() == Some(done.id.name())
                && WorkspaceId::parse(&e.workspace).is_ok_and(|w| w == workspace)
        });
        if let Some(entry) = entry {
            entry.outcome = Outcome::Updated;
            entry.action = Action::UpdateSas;
            entry.key = Some(active);
            entry.reason = Some(format!(
                "SAS token signed with {standby}, which the rotation regenerated: re-minted with {active} first, as a {}",
                done.summary
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "stsas01";
    /// Two keys, base64 as `listKeys` returns them (`key one ...`, `key two ...`).
    const KEY1: &str = "a2V5IG9uZSBmb3IgdGhlIHNhcyB0ZXN0cw==";
    const KEY2: &str = "a2V5IHR3byBmb3IgdGhlIHNhcyB0ZXN0cw==";
    const NOW: OffsetDateTime = time::macros::datetime!(2026-12-01 03:00 UTC);

    fn keys() -> AccountKeys {
        AccountKeys {
            key1: SecretString::from(KEY1),
            key2: SecretString::from(KEY2),
        }
    }

    fn blob(container: &str) -> Datastore {
        serde_json::from_value(serde_json::json!({
            "name": "exports",
            "properties": {
                "datastoreType": "AzureBlob", "accountName": ACCOUNT, "containerName": container,
                "credentials": {"credentialsType": "Sas"}
            }
        }))
        .unwrap()
    }

    /// `fields` signed with `key` for `container`, as a user would have made it.
    fn signed(fields: &str, key: &str, container: &str) -> SecretString {
        let key = AccountKey::new(ACCOUNT, &SecretString::from(key)).unwrap();
        let unsigned = SasToken::unsigned(fields).unwrap();
        sas::sign(&unsigned, &key, SignedResource::Container(container)).unwrap()
    }

    const ACCOUNT_SAS: &str = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2099-01-01T00:00:00Z";
    const CONTAINER_SAS: &str = "sv=2024-11-04&sr=c&sp=rl&se=2099-01-01T00:00:00Z";

    #[test]
    fn the_signer_of_account_and_container_tokens_is_found() {
        let ds = blob("exports");
        for fields in [ACCOUNT_SAS, CONTAINER_SAS] {
            let by_key2 = signed(fields, KEY2, "exports");
            assert_eq!(
                signer(&by_key2, &ds, ACCOUNT, &keys(), NOW),
                Signer::Key(KeySlot::Key2),
                "{fields}"
            );
            let by_key1 = signed(fields, KEY1, "exports");
            assert_eq!(
                signer(&by_key1, &ds, ACCOUNT, &keys(), NOW),
                Signer::Key(KeySlot::Key1),
                "{fields}"
            );
        }
    }

    #[test]
    fn dead_expired_and_delegated_tokens_consume_no_key() {
        let ds = blob("exports");
        let regenerated = "b2xkIGtleSwgcmVnZW5lcmF0ZWQgc2luY2U=";
        let dead = signed(ACCOUNT_SAS, regenerated, "exports");
        assert_eq!(
            signer(&dead, &ds, ACCOUNT, &keys(), NOW),
            Signer::NotAConsumer
        );
        let expired = signed(
            "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2026-01-01T00:00:00Z",
            KEY2,
            "exports",
        );
        assert_eq!(
            signer(&expired, &ds, ACCOUNT, &keys(), NOW),
            Signer::NotAConsumer
        );
        let delegated =
            SecretString::from("sv=2024-11-04&sr=c&sp=r&skoid=x&sktid=y&se=2099-01-01&sig=abc");
        assert_eq!(
            signer(&delegated, &ds, ACCOUNT, &keys(), NOW),
            Signer::NotAConsumer
        );
        let garbage = SecretString::from("not a token");
        assert_eq!(
            signer(&garbage, &ds, ACCOUNT, &keys(), NOW),
            Signer::NotAConsumer
        );
    }

    #[test]
    fn a_token_keysync_cannot_sign_again_has_an_unknown_signer() {
        let ds = blob("exports");
        let old_version = SecretString::from("sv=2019-12-12&ss=b&srt=co&sp=rl&sig=abc");
        let Signer::Unknown(why) = signer(&old_version, &ds, ACCOUNT, &keys(), NOW) else {
            panic!("an old version is not signed again");
        };
        assert!(why.contains("2019-12-12"), "{why}");
        // A blob SAS (sr=b) names a blob keysync does not know.
        let one_blob = SecretString::from("sv=2024-11-04&sr=b&sp=r&sig=abc");
        assert!(matches!(
            signer(&one_blob, &ds, ACCOUNT, &keys(), NOW),
            Signer::Unknown(_)
        ));
        // A container SAS for a datastore that names no container.
        let mut nameless = blob("exports").as_json().clone();
        nameless["properties"]
            .as_object_mut()
            .unwrap()
            .remove("containerName");
        let nameless: Datastore = serde_json::from_value(nameless.into()).unwrap();
        let token = signed(CONTAINER_SAS, KEY2, "exports");
        assert!(matches!(
            signer(&token, &nameless, ACCOUNT, &keys(), NOW),
            Signer::Unknown(_)
        ));
    }
}
