//! Event Grid: after a key regeneration the emulator posts a
//! `Microsoft.Resources.ResourceActionSuccess` event (Event Grid schema, as an array) to the
//! webhook, retrying failed deliveries the way a subscription's retry policy would.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use url::Url;

use super::clock::azure_time;
use super::identity::Principal;
use super::random;
use super::server::Shared;
use crate::resource_id::StorageAccountId;

/// The operation name of a key regeneration in activity events.
pub(crate) const REGENERATE_KEY_ACTION: &str =
    "Microsoft.Storage/storageAccounts/regenerateKey/action";

/// The Azure Portal's application id, which signs users' portal requests.
const PORTAL_APP_ID: &str = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c";

/// What `/_emulator/state` shows of an event: never its claims.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventRecord {
    pub id: String,
    pub account: String,
    pub attempts: u32,
    pub delivered: bool,
    pub last_status: Option<u16>,
}

/// An event waiting to be posted.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub id: String,
    /// The Event Grid array as posted.
    pub body: Value,
}

impl PendingEvent {
    /// The state's record of this event before any attempt.
    pub(crate) fn record(&self, account: &StorageAccountId) -> EventRecord {
        EventRecord {
            id: self.id.clone(),
            account: account.as_str().to_string(),
            attempts: 0,
            delivered: false,
            last_status: None,
        }
    }
}

/// The facts of one successful `regenerateKey` call.
pub(crate) struct KeyRegenerated<'a> {
    pub account: &'a StorageAccountId,
    pub tenant: &'a str,
    pub caller: &'a Principal,
    pub correlation_id: &'a str,
    pub client_request_id: &'a str,
    pub url: &'a str,
    pub client_ip: &'a str,
    pub at: OffsetDateTime,
}

impl KeyRegenerated<'_> {
    /// The event Event Grid would post for it.
    pub(crate) fn event(&self) -> PendingEvent {
        let id = random::guid();
        let account = self.account.as_str();
        let subscription = self.account.subscription();
        let data = json!({
            "authorization": {
                "scope": account,
                "action": REGENERATE_KEY_ACTION,
                "evidence": self.evidence(subscription),
            },
            "claims": self.claims(),
            "correlationId": self.correlation_id,
            "httpRequest": {
                "clientRequestId": self.client_request_id,
                "clientIpAddress": self.client_ip,
                "method": "POST",
                "url": self.url,
            },
            "resourceProvider": "Microsoft.Storage",
            "resourceUri": account,
            "operationName": REGENERATE_KEY_ACTION,
            "status": "Succeeded",
            "subscriptionId": subscription,
            "tenantId": self.tenant,
        });
        let body = json!([{
            "subject": account,
            "eventType": "Microsoft.Resources.ResourceActionSuccess",
            "eventTime": azure_time(self.at),
            "id": id,
            "data": data,
            "dataVersion": "2",
            "metadataVersion": "1",
            "topic": format!("/subscriptions/{subscription}"),
        }]);
        PendingEvent { id, body }
    }

    fn evidence(&self, subscription: &str) -> Value {
        let (principal_id, principal_type) = match self.caller {
            Principal::ManagedIdentity { principal_id, .. } => (principal_id, "ServicePrincipal"),
            Principal::User(user) => (&user.object_id, "User"),
        };
        json!({
            "role": "Storage Account Key Operator Service Role",
            "roleAssignmentScope": format!("/subscriptions/{subscription}"),
            "roleAssignmentId": random::guid(),
            "roleDefinitionId": "81a9662b-bebf-436f-a333-f67b29880f12",
            "principalId": principal_id,
            "principalType": principal_type,
        })
    }

    fn claims(&self) -> Value {
        let issuer = format!("https://sts.windows.net/{}/", self.tenant);
        let object_claim = "http://schemas.microsoft.com/identity/claims/objectidentifier";
        match self.caller {
            Principal::ManagedIdentity {
                client_id,
                principal_id,
            } => json!({
                "aud": "https://management.azure.com",
                "iss": issuer,
                "appid": client_id,
                "appidacr": "2",
                "idtyp": "app",
                object_claim: principal_id,
                "ver": "1.0",
            }),
            Principal::User(user) => json!({
                "aud": "https://management.core.windows.net/",
                "iss": issuer,
                "name": user.name,
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": user.upn,
                "ipaddr": self.client_ip,
                "appid": PORTAL_APP_ID,
                object_claim: user.object_id,
                "ver": "1.0",
            }),
        }
    }
}

/// Posts `event` to the webhook set at the time of each attempt, retrying non-2xx answers and
/// failed connections, and records every attempt in the state.
pub(crate) async fn deliver(shared: Arc<Shared>, event: PendingEvent) {
    let settings = shared.lock().settings.event_delivery.clone();
    super::routes::pause(Duration::from_millis(settings.delay_ms)).await;
    let timeout = Duration::from_millis(settings.timeout_ms);
    for attempt in 0..settings.max_attempts {
        let Some(webhook) = shared.lock().webhook.clone() else {
            tracing::debug!(event = %event.id, "no event webhook set; event not posted");
            return;
        };
        let status = post(&shared.http, &webhook, &event, attempt, timeout).await;
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        record_attempt(&mut shared.lock().events, &event.id, status, delivered);
        if delivered {
            tracing::debug!(event = %event.id, attempt, "event delivered");
            return;
        }
        tracing::debug!(event = %event.id, attempt, status, "event delivery failed");
        if attempt + 1 < settings.max_attempts {
            tokio::time::sleep(Duration::from_millis(settings.retry_delay_ms)).await;
        }
    }
    tracing::warn!(event = %event.id, attempts = settings.max_attempts, "event not delivered");
}

/// One delivery attempt; the answer's status, or `None` when no answer came.
async fn post(
    http: &reqwest::Client,
    webhook: &Url,
    event: &PendingEvent,
    attempt: u32,
    timeout: Duration,
) -> Option<u16> {
    let response = http
        .post(webhook.clone())
        .timeout(timeout)
        .header("aeg-event-type", "Notification")
        .header("aeg-subscription-name", "KEYSYNC")
        .header("aeg-delivery-count", attempt.to_string())
        .header("aeg-data-version", "2")
        .header("aeg-metadata-version", "1")
        .json(&event.body)
        .send()
        .await;
    response.ok().map(|r| r.status().as_u16())
}

fn record_attempt(events: &mut [EventRecord], id: &str, status: Option<u16>, delivered: bool) {
    if let Some(record) = events.iter_mut().find(|e| e.id == id) {
        record.attempts += 1;
        record.last_status = status;
        record.delivered = delivered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::scenario::UserSpec;
    use time::macros::datetime;

    const ACCOUNT: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-ml/providers/Microsoft.Storage/storageAccounts/stmlshared01";

    /// The contract sample in `tests/fixtures/azure-contract`.
    fn fixture() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/azure-contract/events/regenerate_key_egschema.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn keys(value: &Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_event_has_the_shape_of_the_contract_sample() {
        let account = StorageAccountId::parse(ACCOUNT).unwrap();
        let user = Principal::User(UserSpec::default());
        let facts = KeyRegenerated {
            account: &account,
            tenant: "aaaaaaaa-0000-4000-8000-00000000000a",
            caller: &user,
            correlation_id: "c",
            client_request_id: "r",
            url: "http://127.0.0.1/x",
            client_ip: "127.0.0.1",
            at: datetime!(2026-11-20 09:14:03 UTC),
        };
        let ours = facts.event().body;
        let sample = fixture();
        assert_eq!(keys(&ours[0]), keys(&sample[0]));
        assert_eq!(keys(&ours[0]["data"]), keys(&sample[0]["data"]));
        for block in ["authorization", "httpRequest"] {
            assert_eq!(
                keys(&ours[0]["data"][block]),
                keys(&sample[0]["data"][block]),
                "{block}"
            );
        }
        assert_eq!(
            keys(&ours[0]["data"]["authorization"]["evidence"]),
            keys(&sample[0]["data"]["authorization"]["evidence"])
        );
        for field in [
            "subject",
            "eventType",
            "topic",
            "dataVersion",
            "metadataVersion",
        ] {
            assert_eq!(ours[0][field], sample[0][field], "{field}");
        }
        for field in [
            "operationName",
            "resourceUri",
            "subscriptionId",
            "tenantId",
            "status",
            "resourceProvider",
        ] {
            assert_eq!(ours[0]["data"][field], sample[0]["data"][field], "{field}");
        }
        assert_eq!(
            ours[0]["data"]["authorization"]["evidence"]["principalType"],
            "User"
        );
    }
}
