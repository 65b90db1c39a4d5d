//! Choosing the credential that gets ARM bearer tokens.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::{Error, ErrorKind};
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};

use crate::config::CredentialChoice;

/// Creates the credential once for the whole process (it caches tokens).
pub fn credential(choice: &CredentialChoice) -> azure_core::Result<Arc<dyn TokenCredential>> {
    credential_with(choice, |name| std::env::var(name).ok())
}

/// [`credential`] with the environment read through `lookup`, so tests never touch the process
/// environment.
fn credential_with(
    choice: &CredentialChoice,
    lookup: impl Fn(&str) -> Option<String>,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    match choice {
        CredentialChoice::ManagedIdentity { client_id } => {
            managed_identity(client_id.as_deref(), lookup)
        }
        CredentialChoice::DeveloperTools => {
            tracing::info!(credential = "developer_tools", "ARM credential chosen");
            Ok(DeveloperToolsCredential::new(None)?)
        }
    }
}

fn managed_identity(
    client_id: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    // Without both variables, ManagedIdentityCredential falls back to IMDS (169.254.169.254),
    // whose retries take about 72 s to fail anywhere but on an Azure VM. Functions always sets
    // both when an identity is enabled, so their absence is a configuration error.
    let is_set = |name: &str| lookup(name).is_some_and(|value| !value.trim().is_empty());
    if !is_set("IDENTITY_ENDPOINT") || !is_set("IDENTITY_HEADER") {
        return Err(Error::with_message(
            ErrorKind::Credential,
            "managed identity needs IDENTITY_ENDPOINT and IDENTITY_HEADER: enable the function \
             app's identity, or run locally with `az login`",
        ));
    }

    // One request per token attempt: the ARM client times each attempt out and retries a few
    // (`arm::token`). azure_core's default policy retries eight times over about a minute, and
    // its HTTP client waits 60 s for an endpoint that accepts and never answers.
    let client_options = ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(|id| UserAssignedId::ClientId(id.to_string())),
        client_options,
    };
    let credential = ManagedIdentityCredential::new(Some(options))?;
    tracing::info!(
        credential = "managed_identity",
        user_assigned = client_id.is_some(),
        "ARM credential chosen"
    );
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_identity_without_the_app_service_variables_is_refused_not_sent_to_imds() {
        let choice = CredentialChoice::ManagedIdentity { client_id: None };
        for env in [
            &[][..],
            &[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")][..],
            &[("IDENTITY_ENDPOINT", "http://x"), ("IDENTITY_HEADER", " ")][..],
        ] {
            let lookup = |name: &str| {
                env.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            };
            let err = credential_with(&choice, lookup).unwrap_err().to_string();
            assert!(err.contains("IDENTITY_HEADER"), "{env:?}: {err}");
        }
    }
}
