//! Describing one logical ARM request (what to send, where, on whose behalf) and building its URL
//! from parsed resource ids.

use bytes::Bytes;
use reqwest::Method;
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use crate::resource_id::{DatastoreId, StorageAccountId, WorkspaceId};

use super::redact::SentSecrets;
use super::{ArmClient, ArmError, ArmErrorKind, Operation};

/// One logical request; every retry of it sends the same method, URL and body.
pub(super) struct ArmRequest<'a> {
    pub operation: Operation,
    /// The ARM id the request is about, for errors and logs (never the URL: it has a query).
    pub resource: &'a str,
    /// Whose concurrency limit the request counts against.
    pub subscription: &'a str,
    pub method: Method,
    pub url: Url,
    /// JSON to send. A datastore `PUT` holds a key, so the bytes are kept as a secret.
    pub body: Option<SecretBody>,
    /// The secrets in `body`, redacted from any error its answer brings.
    pub secrets: SentSecrets,
    /// No attempt starts, and no retry sleeps, past this instant.
    pub deadline: Option<Instant>,
}

impl<'a> ArmRequest<'a> {
    pub fn new(
        operation: Operation,
        resource: &'a str,
        subscription: &'a str,
        method: Method,
        url: Url,
    ) -> Self {
        ArmRequest {
            operation,
            resource,
            subscription,
            method,
            url,
            body: None,
            secrets: SentSecrets::default(),
            deadline: None,
        }
    }

    pub fn with_body(mut self, body: Zeroizing<Vec<u8>>) -> Self {
        self.secrets = SentSecrets::in_body(&body);
        self.body = Some(SecretBody(Bytes::from_owner(body)));
        self
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// A `GET` of `url` on behalf of the same operation, such as the next page of a list.
    pub fn follow(&self, url: Url) -> ArmRequest<'a> {
        self.follow_as(self.operation, url)
    }

    /// A `GET` of `url` about the same resource as another operation, such as a long-running
    /// operation's status, which ARM authorizes with an action of its own.
    pub fn follow_as(&self, operation: Operation, url: Url) -> ArmRequest<'a> {
        ArmRequest::new(
            operation,
            self.resource,
            self.subscription,
            Method::GET,
            url,
        )
        .with_deadline(self.deadline)
    }

    /// An error about this request that has no HTTP answer.
    pub fn error(&self, kind: ArmErrorKind, message: impl AsRef<str>) -> ArmError {
        ArmError::new(kind, self.operation, self.resource, message)
    }
}

/// A request body that may hold a secret. Every attempt sends the same bytes without copying
/// them, and they are zeroed when the last attempt lets go. It prints as nothing.
pub(super) struct SecretBody(Bytes);

impl SecretBody {
    /// The bytes, for one attempt; keep them out of logs.
    pub fn expose(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody(..)")
    }
}

/// The path segments of a storage account.
pub(super) fn account_path(id: &StorageAccountId) -> Vec<String> {
    provider_path(
        id.subscription(),
        id.resource_group(),
        "Microsoft.Storage",
        &["storageAccounts", id.name()],
    )
}

/// The path segments of an ML workspace.
pub(super) fn workspace_path(id: &WorkspaceId) -> Vec<String> {
    provider_path(
        id.subscription(),
        id.resource_group(),
        "Microsoft.MachineLearningServices",
        &["workspaces", id.name()],
    )
}

/// The path segments of a datastore.
pub(super) fn datastore_path(id: &DatastoreId) -> Vec<String> {
    let mut path = workspace_path(&id.workspace());
    path.extend(["datastores".to_string(), id.name().to_string()]);
    path
}

/// The path segments of every resource of a type in a subscription.
pub(super) fn subscription_path(subscription: &str, provider: &str, kind: &str) -> Vec<String> {
    ["subscriptions", subscription, "providers", provider, kind]
        .map(str::to_string)
        .to_vec()
}

fn provider_path(subscription: &str, group: &str, provider: &str, rest: &[&str]) -> Vec<String> {
    let head = [
        "subscriptions",
        subscription,
        "resourceGroups",
        group,
        "providers",
        provider,
    ];
    head.iter().chain(rest).map(|s| s.to_string()).collect()
}

/// True when `url` has the endpoint's scheme, host and port: only then may it get the token.
pub(super) fn same_origin(url: &Url, endpoint: &Url) -> bool {
    url.origin() == endpoint.origin()
}

impl ArmClient {
    /// The URL of `segments` under the endpoint, with the operation's api-version and `query`.
    pub(super) fn url(
        &self,
        operation: Operation,
        resource: &str,
        segments: &[String],
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        let endpoint = &self.options().endpoint;
        resource_url(endpoint, operation, segments, query).ok_or_else(|| {
            let message = "the ARM endpoint is not a base URL";
            ArmError::new(ArmErrorKind::Transport, operation, resource, message)
        })
    }
}

/// `endpoint/segment/.../segment?api-version=...&query`, each segment percent-encoded; `None`
/// when the endpoint cannot have a path.
fn resource_url(
    endpoint: &Url,
    operation: Operation,
    segments: &[String],
    query: &[(&str, &str)],
) -> Option<Url> {
    let mut url = endpoint.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    url.query_pairs_mut()
        .append_pair("api-version", operation.api_version())
        .extend_pairs(query);
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_the_parsed_id() {
        let id = DatastoreId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d",
        )
        .unwrap();
        assert_eq!(
            datastore_path(&id).join("/"),
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d"
        );
    }

    #[test]
    fn urls_percent_encode_segments_and_pin_the_api_version() {
        let endpoint = Url::parse("http://127.0.0.1:8080/arm/").unwrap();
        let id = StorageAccountId::parse(
            "/subscriptions/s/resourceGroups/rg with space%/providers/Microsoft.Storage/storageAccounts/stacct",
        )
        .unwrap();
        let mut path = account_path(&id);
        path.push("listKeys".into());
        let op = Operation::StorageAccountsListKeys;
        let url = resource_url(&endpoint, op, &path, &[("count", "100")]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/arm/subscriptions/s/resourceGroups/rg%20with%20space%25/providers/Microsoft.Storage/storageAccounts/stacct/listKeys?api-version=2025-08-01&count=100"
        );
        let opaque = Url::parse("mailto:someone@example.com").unwrap();
        assert!(resource_url(&opaque, op, &path, &[]).is_none());
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let endpoint = Url::parse("https://management.azure.com").unwrap();
        let same = Url::parse("https://management.azure.com:443/x?y=1").unwrap();
        assert!(same_origin(&same, &endpoint));
        for other in [
            "http://management.azure.com/x",
            "https://management.azure.com:8443/x",
            "https://evil.example.com/x",
            "https://management.azure.com.evil.example.com/x",
        ] {
            assert!(
                !same_origin(&Url::parse(other).unwrap(), &endpoint),
                "{other}"
            );
        }
    }
}
