//! The emulator's storage data plane: one Azurite serving every account of the scenario flagged
//! `azurite`, kept in step with the keys the ARM side holds.
//!
//! - When attached, each flagged account's `primaryEndpoints` become just
//!   `{"blob": "http://127.0.0.1:PORT/<name>/"}` (path style, as Azurite serves it; Azurite has no
//!   Azure Files, so no file endpoint is listed), and the container of every blob and ADLS Gen2
//!   datastore on those accounts is created.
//! - After every successful `regenerateKey` that changed a flagged account's keys, Azurite is
//!   restarted on the same port with the new keys, and the containers are created again, before
//!   the ARM answer (and the Event Grid event) goes out: whoever learns of the new key can use it
//!   at once, and the old key stops working at once, as in Azure.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::azurite::Azurite;
use super::server::Shared;
use super::state::State;
use crate::model::storage::KeySlot;
use crate::storage::STORAGE_VERSION;
use crate::storage::shared_key::{self, AccountKey};

/// Azurite and the accounts it was last started with.
pub(crate) struct DataPlane {
    azurite: Azurite,
    /// `AZURITE_ACCOUNTS` as last given.
    accounts: SecretString,
}

impl DataPlane {
    pub(crate) fn url(&self) -> Url {
        self.azurite.url()
    }
}

/// Starts Azurite for the flagged accounts and points their blob endpoints at it.
pub(crate) async fn attach(shared: &Shared, binary: &Path) -> anyhow::Result<Url> {
    let mut slot = shared.data_plane.lock().await;
    ensure!(slot.is_none(), "Azurite is already attached");
    let accounts = azurite_accounts(&shared.lock())?;
    ensure!(
        !accounts.expose_secret().is_empty(),
        "no storage account of the scenario is flagged \"azurite\": true"
    );
    let azurite = Azurite::start(binary, &accounts).await?;
    let base = azurite.url();
    {
        let mut state = shared.lock();
        for account in state.accounts.iter_mut().filter(|a| a.spec.azurite) {
            account.data_plane = Some(format!("{base}{}/", account.name()));
        }
    }
    create_containers(shared, &base).await?;
    tracing::info!(%base, "Azurite serves the storage data plane");
    *slot = Some(DataPlane { azurite, accounts });
    Ok(base)
}

/// Restarts Azurite when the flagged accounts' keys changed. A failure is logged: the key
/// regeneration itself has happened and stands.
pub(crate) async fn keys_changed(shared: &Shared) {
    let mut slot = shared.data_plane.lock().await;
    let Some(plane) = slot.as_mut() else {
        return;
    };
    let accounts = match azurite_accounts(&shared.lock()) {
        Ok(accounts) => accounts,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "Azurite keeps the old keys");
            return;
        }
    };
    if accounts.expose_secret() == plane.accounts.expose_secret() {
        return;
    }
    let restarted = plane.azurite.restart(&accounts).await;
    let result = match restarted {
        Ok(()) => create_containers(shared, &plane.url()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            plane.accounts = accounts;
            tracing::info!("Azurite restarted with the new keys");
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "Azurite restart failed"),
    }
}

/// Stops Azurite, if it runs.
pub(crate) async fn stop(shared: &Shared) {
    if let Some(plane) = shared.data_plane.lock().await.as_mut() {
        plane.azurite.stop().await;
    }
}

/// `name:key1:key2;...` for every flagged account. Azurite needs base64 keys.
fn azurite_accounts(state: &State) -> anyhow::Result<SecretString> {
    let mut parts = Vec::new();
    for account in state.accounts.iter().filter(|a| a.spec.azurite) {
        let keys = [account.key(KeySlot::Key1), account.key(KeySlot::Key2)];
        for key in keys {
            if STANDARD.decode(key).is_err() {
                bail!(
                    "storage account '{}': Azurite needs base64 keys",
                    account.name()
                );
            }
        }
        parts.push(format!("{}:{}:{}", account.name(), keys[0], keys[1]));
    }
    Ok(SecretString::from(parts.join(";")))
}

/// Creates the container of every blob and ADLS Gen2 datastore on a flagged account.
async fn create_containers(shared: &Shared, base: &Url) -> anyhow::Result<()> {
    let wanted = containers(&shared.lock())?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the Azurite client")?;
    for (key, container) in wanted {
        create_container(&client, base, &key, &container).await?;
    }
    Ok(())
}

/// (account key, container) for each container to create, each once.
fn containers(state: &State) -> anyhow::Result<Vec<(AccountKey, String)>> {
    let mut out: Vec<(AccountKey, String)> = Vec::new();
    for datastore in state.workspaces.iter().flat_map(|w| &w.datastores) {
        let text = |name: &str| datastore.properties.get(name).and_then(Value::as_str);
        let Some(account) = text("accountName")
            .and_then(|name| state.account_by_name(name))
            .filter(|a| a.spec.azurite)
        else {
            continue;
        };
        let container = match text("datastoreType") {
            Some("AzureBlob") => text("containerName"),
            Some("AzureDataLakeGen2") => text("filesystem"),
            _ => None,
        };
        let Some(container) = container else {
            continue;
        };
        let key = SecretString::from(account.key(KeySlot::Key1).to_string());
        let key = AccountKey::new(account.name(), &key)
            .with_context(|| format!("storage account '{}'", account.name()))?;
        let known = out
            .iter()
            .any(|(k, c)| k.account() == key.account() && c == container);
        if !known {
            out.push((key, container.to_string()));
        }
    }
    Ok(out)
}

/// `PUT {base}{account}/{container}?restype=container`, signed with Shared Key. "Already
/// exists" is fine.
async fn create_container(
    client: &reqwest::Client,
    base: &Url,
    key: &AccountKey,
    container: &str,
) -> anyhow::Result<()> {
    let mut url = base.join(&format!("{}/{container}", key.account()))?;
    url.set_query(Some("restype=container"));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let headers = [
        ("Content-Length", "0"),
        ("x-ms-date", date.as_str()),
        ("x-ms-version", STORAGE_VERSION),
    ];
    let authorization = shared_key::authorization(key, "PUT", &url, &headers);
    let mut request = client.put(url.clone()).body(Vec::new());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .header("Authorization", authorization)
        .send()
        .await
        .with_context(|| format!("creating container '{container}' in Azurite"))?;
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    match (status, code.as_str()) {
        (201, _) | (409, "ContainerAlreadyExists") => Ok(()),
        _ => bail!(
            "Azurite refused to create container '{container}' of '{}': HTTP {status} {code}",
            key.account()
        ),
    }
}
