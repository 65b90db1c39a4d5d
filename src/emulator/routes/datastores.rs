//! Datastore operations: list (paged with `count` and `$skip`), get, create or update, delete
//! and `listSecrets`. Writes store exactly the properties sent (only the read-only `isDefault`
//! is the server's), keep the secret apart as Key Vault does, and validate account keys
//! against the emulated account unless `skipValidation=true`, as Azure Machine Learning does.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::path::{DatastorePath, Named};
use super::{Call, continuation, resolve};
use crate::emulator::identity::Principal;
use crate::emulator::paging;
use crate::emulator::reply::Reply;
use crate::emulator::resources::{Actor, Datastore, SystemData, split_secret};
use crate::emulator::scenario::is_datastore_name;
use crate::emulator::state::State;

/// The page size when a list asks for none; `datastoresMaxPageSize` caps it and any `count`.
const DEFAULT_COUNT: usize = 30;

/// Datastore types and the properties each one requires.
const REQUIRED: [(&str, &[&str]); 5] = [
    ("AzureBlob", &["accountName", "containerName"]),
    ("AzureFile", &["accountName", "fileShareName"]),
    ("AzureDataLakeGen2", &["accountName", "filesystem"]),
    ("AzureDataLakeGen1", &["storeName"]),
    ("OneLake", &["oneLakeWorkspaceName", "artifact"]),
];

/// Credential types and the secret value each one must carry on write (`None`: no secret).
const CREDENTIALS: [(&str, Option<&str>); 5] = [
    ("AccountKey", Some("key")),
    ("Sas", Some("sasToken")),
    ("ServicePrincipal", None),
    ("Certificate", None),
    ("None", None),
];

/// The filters and paging of a `Datastores_List` request.
struct ListRequest {
    start: usize,
    count: usize,
    is_default: Option<bool>,
    names: Vec<String>,
    search: Option<String>,
    order_by_name: Option<bool>,
}

/// `Datastores_List`.
pub(super) fn list(state: &State, call: &Call, workspace: &Named) -> Reply {
    let index = match resolve::workspace(state, workspace) {
        Ok(i) => i,
        Err(reply) => return reply,
    };
    let request = match list_request(call, state.settings.datastores_max_page_size) {
        Ok(request) => request,
        Err(message) => return Reply::user_error(StatusCode::BAD_REQUEST, message),
    };
    let ws = &state.workspaces[index];
    let mut selected: Vec<&Datastore> = ws
        .datastores
        .iter()
        .filter(|d| request.selects(d))
        .collect();
    if let Some(ascending) = request.order_by_name {
        selected.sort_by_key(|d| d.name.to_ascii_lowercase());
        if !ascending {
            selected.reverse();
        }
    }
    let items = selected.iter().map(|d| d.resource(&ws.id)).collect();
    let page = paging::cut(items, request.start, request.count);
    let next_link = page.next.map(|next| {
        paging::absolute_url(call.base_url, call.path, &next_params(call, &request, next))
    });
    Reply::ok(paging::body(page.items, next_link))
}

/// Reads the request; a page holds at most `max_count` datastores, whatever `count` asks (Azure
/// may return fewer items than asked and a `nextLink`).
fn list_request(call: &Call, max_count: usize) -> Result<ListRequest, String> {
    let query = call.query;
    let start = continuation(query, &["$skip", "$skipToken"])
        .map_err(|name| format!("The {name} token is not valid for this list."))?;
    let count = match query.get("count") {
        None => DEFAULT_COUNT.min(max_count),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(max_count),
            _ => {
                return Err(format!(
                    "count must be a positive whole number, not '{raw}'."
                ));
            }
        },
    };
    let flag = |name: &str| {
        query
            .flag(name)
            .map_err(|raw| format!("{name} must be true or false, not '{raw}'."))
    };
    let names = query
        .all("names")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    let order_by_name = query
        .get("orderBy")
        .filter(|o| o.eq_ignore_ascii_case("name"))
        .map(|_| flag("orderByAsc").map(|asc| asc.unwrap_or(true)))
        .transpose()?;
    Ok(ListRequest {
        start,
        count,
        is_default: flag("isDefault")?,
        names,
        search: query.get("searchText").map(str::to_ascii_lowercase),
        order_by_name,
    })
}

impl ListRequest {
    fn selects(&self, datastore: &Datastore) -> bool {
        let default_ok = self.is_default.is_none_or(|d| datastore.is_default() == d);
        let name_ok = self.names.is_empty()
            || self
                .names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&datastore.name));
        let search_ok = self
            .search
            .as_ref()
            .is_none_or(|s| datastore.name.to_ascii_lowercase().contains(s));
        default_ok && name_ok && search_ok
    }
}

/// The parameters of the next page's link: the same list, continued.
fn next_params(call: &Call, request: &ListRequest, next: usize) -> Vec<(&'static str, String)> {
    let mut params = vec![
        ("api-version", call.api_version().to_string()),
        ("$skip", paging::mint_token(next)),
        ("count", request.count.to_string()),
    ];
    if let Some(is_default) = request.is_default {
        params.push(("isDefault", is_default.to_string()));
    }
    params.extend(request.names.iter().map(|n| ("names", n.clone())));
    for name in ["searchText", "orderBy", "orderByAsc"] {
        if let Some(value) = call.query.get(name) {
            params.push((name, value.to_string()));
        }
    }
    params
}

/// `Datastores_Get`: the resource as stored; never the secret.
pub(super) fn get(state: &State, path: &DatastorePath) -> Reply {
    match resolve::datastore(state, path) {
        Ok((w, d)) => {
            let ws = &state.workspaces[w];
            Reply::ok(ws.datastores[d].resource(&ws.id))
        }
        Err(reply) => reply,
    }
}

/// `Datastores_CreateOrUpdate`.
pub(super) fn put(state: &mut State, call: &Call, path: &DatastorePath) -> Reply {
    let w = match resolve::workspace(state, &path.workspace) {
        Ok(w) => w,
        Err(reply) => return reply,
    };
    let properties = match read_write(call, &path.name) {
        Ok(properties) => properties,
        Err(message) => return Reply::user_error(StatusCode::BAD_REQUEST, message),
    };
    if let Err(message) = validate_credentials(state, call, &properties) {
        return Reply::user_error(StatusCode::BAD_REQUEST, message);
    }
    let existing = state.workspaces[w].datastore_index(&path.name);
    let stored = existing.map(|d| &state.workspaces[w].datastores[d]);
    if stored.is_some_and(|d| d.soft_deleted_secret) {
        return soft_deleted_conflict(&path.name);
    }
    let (properties, secret) = to_store(properties, stored);
    let change = (state.clock.now(), actor(call.caller));

    let ws = &mut state.workspaces[w];
    let (status, d) = match existing {
        Some(d) => {
            let datastore = &mut ws.datastores[d];
            datastore.properties = properties;
            datastore.secret = secret;
            datastore.system_data.modified = change;
            (StatusCode::OK, d)
        }
        None => {
            let (at, actor) = change;
            ws.datastores.push(Datastore {
                name: path.name.clone(),
                properties,
                secret,
                system_data: SystemData::created(at, actor),
                writes: 0,
                soft_deleted_secret: false,
            });
            (StatusCode::CREATED, ws.datastores.len() - 1)
        }
    };
    let datastore = &mut ws.datastores[d];
    datastore.writes += 1;
    tracing::info!(
        workspace = ws.id.name(),
        datastore = datastore.name,
        "datastore written"
    );
    Reply::json(status, datastore.resource(&ws.id))
}

/// What Azure ML passes on from Key Vault when the datastore's secret name is held by a
/// soft-deleted secret.
fn soft_deleted_conflict(name: &str) -> Reply {
    let message = format!(
        "Secret '{name}' is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged. (ObjectIsDeletedButRecoverable)"
    );
    Reply::json(
        StatusCode::CONFLICT,
        json!({"error": {"code": "Conflict", "message": message}}),
    )
}

/// Splits written properties into what the resource stores and the secret Key Vault keeps.
/// `isDefault` is read-only: a write neither sets nor clears it. A service principal or
/// certificate write may leave its secret out, and then the stored one stays.
fn to_store(
    mut properties: Map<String, Value>,
    stored: Option<&Datastore>,
) -> (Map<String, Value>, Option<Map<String, Value>>) {
    let is_default = stored.is_some_and(Datastore::is_default);
    properties.insert("isDefault".into(), json!(is_default));
    let written = split_secret(&mut properties);
    let secret = written.or_else(|| {
        let kept = stored.and_then(|d| d.secret.clone());
        kept.filter(|s| same_secrets_type(s, &properties))
    });
    (properties, secret)
}

/// Reads the body of a write: a JSON object with a `properties` object that has the fields
/// Azure requires. Read-only top-level fields (`id`, `name`, `type`, `systemData`) are ignored.
fn read_write(call: &Call, name: &str) -> Result<Map<String, Value>, String> {
    if !is_datastore_name(name) {
        return Err(format!(
            "The datastore name '{name}' is invalid: use letters, digits and underscores."
        ));
    }
    let body: Value = serde_json::from_slice(call.body)
        .map_err(|_| "The request body is not valid JSON.".to_string())?;
    let properties = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("The request body must have a 'properties' object.")?;
    check_shape(properties)?;
    Ok(properties.clone())
}

/// Checks the datastore type, its required fields and the credentials' shape.
fn check_shape(properties: &Map<String, Value>) -> Result<(), String> {
    let text = |name: &str| properties.get(name).and_then(Value::as_str);
    let datastore_type = text("datastoreType").ok_or("properties.datastoreType is required.")?;
    let (_, required) = REQUIRED
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(datastore_type))
        .ok_or_else(|| format!("datastoreType '{datastore_type}' is not supported."))?;
    if let Some(missing) = required.iter().find(|f| text(f).is_none_or(str::is_empty)) {
        return Err(format!(
            "properties.{missing} is required for a {datastore_type} datastore."
        ));
    }
    let credentials = properties
        .get("credentials")
        .and_then(Value::as_object)
        .ok_or("properties.credentials is required.")?;
    let credentials_type = credentials
        .get("credentialsType")
        .and_then(Value::as_str)
        .ok_or("properties.credentials.credentialsType is required.")?;
    let (_, secret_field) = CREDENTIALS
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(credentials_type))
        .ok_or_else(|| format!("credentialsType '{credentials_type}' is not supported."))?;
    check_secrets(credentials.get("secrets"), credentials_type, *secret_field)
}

fn check_secrets(
    secrets: Option<&Value>,
    credentials_type: &str,
    required_field: Option<&str>,
) -> Result<(), String> {
    let Some(secrets) = secrets.filter(|s| !s.is_null()) else {
        return match required_field {
            Some(field) => Err(format!(
                "properties.credentials.secrets.{field} is required for {credentials_type} credentials."
            )),
            None => Ok(()),
        };
    };
    if credentials_type.eq_ignore_ascii_case("None") {
        return Err("Credentials of type None take no secrets.".into());
    }
    let secrets = secrets
        .as_object()
        .ok_or("properties.credentials.secrets must be an object.")?;
    let secrets_type = secrets.get("secretsType").and_then(Value::as_str);
    if !secrets_type.is_some_and(|t| t.eq_ignore_ascii_case(credentials_type)) {
        return Err(format!(
            "properties.credentials.secrets.secretsType must be '{credentials_type}'."
        ));
    }
    let value = |field: &str| {
        secrets
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    match required_field {
        Some(field) if value(field).is_empty() => Err(format!(
            "properties.credentials.secrets.{field} must be a non-empty string."
        )),
        _ => Ok(()),
    }
}

/// Tries an account key against the account it names, as Azure Machine Learning does on
/// write. The message never includes the key.
fn validate_credentials(
    state: &State,
    call: &Call,
    properties: &Map<String, Value>,
) -> Result<(), String> {
    if call.query.flag("skipValidation") == Ok(Some(true)) {
        return Ok(());
    }
    let credentials = properties.get("credentials").cloned().unwrap_or_default();
    let is_account_key = credentials["credentialsType"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("AccountKey"));
    let Some(account_name) = properties.get("accountName").and_then(Value::as_str) else {
        return Ok(());
    };
    let Some(account) = state.account_by_name(account_name) else {
        return Ok(());
    };
    let same_cloud = properties
        .get("endpoint")
        .and_then(Value::as_str)
        .is_none_or(|e| e.eq_ignore_ascii_case(account.endpoint_suffix()));
    if !is_account_key || !same_cloud {
        return Ok(());
    }
    if account.shared_key_disabled() {
        return Err(format!(
            "Unable to access storage account '{}': key based authentication is not permitted \
             on this storage account.",
            account.name()
        ));
    }
    let key = credentials["secrets"]["key"].as_str().unwrap_or_default();
    if account.has_key(key) {
        return Ok(());
    }
    Err(format!(
        "Unable to access storage account '{}' with the provided account key: authentication \
         failed. Check that the key is one of the account's current keys, or pass \
         skipValidation=true.",
        account.name()
    ))
}

fn same_secrets_type(secret: &Map<String, Value>, properties: &Map<String, Value>) -> bool {
    let stored = secret.get("secretsType").and_then(Value::as_str);
    let written = properties
        .get("credentials")
        .and_then(|c| c.get("credentialsType"))
        .and_then(Value::as_str);
    matches!((stored, written), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

fn actor(caller: &Principal) -> Actor {
    match caller {
        Principal::ManagedIdentity { client_id, .. } => Actor {
            name: client_id.clone(),
            kind: "Application",
        },
        Principal::User(user) => Actor {
            name: user.upn.clone(),
            kind: "User",
        },
    }
}

/// `Datastores_Delete`: 200 when it existed, 204 when there was nothing to delete.
pub(super) fn delete(state: &mut State, path: &DatastorePath) -> Reply {
    let w = match resolve::workspace(state, &path.workspace) {
        Ok(w) => w,
        Err(reply) => return reply,
    };
    let ws = &mut state.workspaces[w];
    let Some(d) = ws.datastore_index(&path.name) else {
        return Reply::empty(StatusCode::NO_CONTENT);
    };
    let removed = ws.datastores.remove(d);
    tracing::info!(
        workspace = ws.name(),
        datastore = removed.name,
        "datastore deleted"
    );
    let id = format!("{}/datastores/{}", ws.id.as_str(), removed.name);
    state.deleted_datastores.push(id);
    Reply::empty(StatusCode::OK)
}

/// `Datastores_ListSecrets`: the stored secret, or 404 when none is stored.
pub(super) fn list_secrets(state: &State, path: &DatastorePath) -> Reply {
    let (w, d) = match resolve::datastore(state, path) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    match &state.workspaces[w].datastores[d].secret {
        Some(secret) => Reply::ok(Value::Object(secret.clone())),
        None => Reply::json(
            StatusCode::NOT_FOUND,
            json!({"error": {
                "code": "UserError",
                "message": format!("No secrets are stored for datastore '{}'.", path.name),
                "innerError": {"code": "NotFoundError"}
            }}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn blob(credentials: Value) -> Map<String, Value> {
        properties(json!({
            "datastoreType": "AzureBlob",
            "accountName": "sta",
            "containerName": "c",
            "credentials": credentials
        }))
    }

    #[test]
    fn an_account_key_write_needs_its_key_and_secrets_type() {
        let ok = blob(
            json!({"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": "k"}}),
        );
        assert_eq!(check_shape(&ok), Ok(()));
        let no_secrets = blob(json!({"credentialsType": "AccountKey"}));
        assert!(
            check_shape(&no_secrets)
                .unwrap_err()
                .contains("secrets.key")
        );
        let no_type = blob(json!({"credentialsType": "AccountKey", "secrets": {"key": "k"}}));
        assert!(check_shape(&no_type).unwrap_err().contains("secretsType"));
        let empty = blob(
            json!({"credentialsType": "AccountKey", "secrets": {"secretsType": "AccountKey", "key": ""}}),
        );
        assert!(check_shape(&empty).is_err());
    }

    #[test]
    fn a_write_missing_what_its_type_requires_is_refused() {
        let mut no_container = blob(json!({"credentialsType": "None"}));
        no_container.remove("containerName");
        assert!(
            check_shape(&no_container)
                .unwrap_err()
                .contains("containerName")
        );
        let no_type = properties(json!({"credentials": {"credentialsType": "None"}}));
        assert!(check_shape(&no_type).unwrap_err().contains("datastoreType"));
        let odd = blob(json!({"credentialsType": "Kerberos"}));
        assert!(check_shape(&odd).unwrap_err().contains("Kerberos"));
    }

    #[test]
    fn sas_and_identity_credentials_are_checked_too() {
        let sas = blob(
            json!({"credentialsType": "Sas", "secrets": {"secretsType": "Sas", "sasToken": "sv=1"}}),
        );
        assert_eq!(check_shape(&sas), Ok(()));
        let identity = blob(json!({"credentialsType": "None"}));
        assert_eq!(check_shape(&identity), Ok(()));
        let identity_with_secret =
            blob(json!({"credentialsType": "None", "secrets": {"secretsType": "None"}}));
        assert!(check_shape(&identity_with_secret).is_err());
    }
}
