//! Configuration, read from the environment (app settings on Azure Functions) through an
//! injectable lookup so that tests never touch the process environment.

mod rotation;
mod verification;

use std::time::Duration;

use crate::report::printable;
use url::Url;

pub use rotation::{ROTATE_TAG, RotationPolicy};
pub use verification::VerificationPolicy;

/// The default Azure Resource Manager endpoint (public cloud).
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// ARM requests in flight per subscription unless `KEYSYNC_MAX_CONCURRENCY` says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 24;
/// The default token scope for ARM (public cloud).
pub const DEFAULT_ARM_SCOPE: &str = "https://management.azure.com/.default";

/// A setting that is missing or has a value keysync cannot use. The message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    /// The error about `setting`. The problem quotes values from the environment, so it is made
    /// printable: a value with a line break cannot forge a second log line.
    pub(crate) fn new(setting: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_string(),
            problem: crate::report::printable(&problem.into(), 400),
        }
    }
}

/// How keysync obtains its ARM bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    /// App Service / Functions managed identity (`IDENTITY_ENDPOINT` and `IDENTITY_HEADER` set);
    /// `client_id` selects a user-assigned identity.
    ManagedIdentity { client_id: Option<String> },
    /// Developer tools on a workstation (`az login`, `azd auth login`).
    DeveloperTools,
}

/// Everything keysync needs to talk to Azure.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KEYSYNC_ARM_ENDPOINT`.
    pub arm_endpoint: Url,
    /// `KEYSYNC_ARM_SCOPE`.
    pub arm_scope: String,
    /// `KEYSYNC_SUBSCRIPTIONS`: the subscriptions in scope.
    pub subscriptions: Vec<String>,
    /// `KEYSYNC_MAX_CONCURRENCY`: ARM requests in flight per subscription.
    pub max_concurrency: usize,
    /// `KEYSYNC_REQUEST_TIMEOUT_SECS`: one ARM request, including reading its body.
    pub request_timeout: Duration,
    pub credential: CredentialChoice,
    /// `IDENTITY_HEADER`, which the credential reads itself: kept only so that no error repeats
    /// it (an identity endpoint may quote the request it refused).
    pub identity_header: Option<secrecy::SecretString>,
    pub rotation: RotationPolicy,
    /// Checking credentials against storage after a run, and re-minting dead SAS tokens.
    pub verification: VerificationPolicy,
    /// `KEYSYNC_EVENT_DEADLINE_SECS`: an event invocation starts no new work after this long,
    /// so that it answers before Event Grid gives up waiting (about 30 s) and redelivers.
    pub event_deadline: Duration,
    /// `KEYSYNC_TIMER_DEADLINE_SECS`: the same for a timer tick, inside the host's
    /// `functionTimeout` (5 minutes in host.json).
    pub timer_deadline: Duration,
    /// `KEYSYNC_HTTP_DEADLINE_SECS`: the same for a call of `/api/reconcile`, the account's
    /// lookup included, inside the 230 s Azure's front end waits for an HTTP trigger's answer.
    pub http_deadline: Duration,
}

impl Config {
    /// Reads the configuration from the process environment. A setting whose value is not
    /// UTF-8 is refused by name, rather than read as absent and replaced by its default.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_over(|_| None)
    }

    /// [`from_env`](Self::from_env), with `overrides` (command-line flags) consulted first.
    pub fn from_env_over(overrides: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let unreadable = std::cell::RefCell::new(None);
        let config = Self::from_lookup(|name| {
            overrides(name).or_else(|| match std::env::var(name) {
                Ok(value) => Some(value),
                Err(std::env::VarError::NotPresent) => None,
                Err(std::env::VarError::NotUnicode(_)) => {
                    let mut first = unreadable.borrow_mut();
                    first.get_or_insert_with(|| name.to_string());
                    None
                }
            })
        });
        match unreadable.into_inner() {
            Some(name) => Err(ConfigError::new(&name, "the value is not valid UTF-8 text")),
            None => config,
        }
    }

    /// Reads the configuration through `lookup` (a name → value function).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let arm_endpoint = parse_endpoint(get("KEYSYNC_ARM_ENDPOINT"))?;
        let arm_scope = get("KEYSYNC_ARM_SCOPE").unwrap_or_else(|| DEFAULT_ARM_SCOPE.to_string());
        let subscriptions = parse_subscriptions(get("KEYSYNC_SUBSCRIPTIONS"))?;
        let max_concurrency = parse_number(
            "KEYSYNC_MAX_CONCURRENCY",
            get("KEYSYNC_MAX_CONCURRENCY"),
            DEFAULT_MAX_CONCURRENCY as u64,
            1..=256,
        )?;
        let timeout = parse_number(
            "KEYSYNC_REQUEST_TIMEOUT_SECS",
            get("KEYSYNC_REQUEST_TIMEOUT_SECS"),
            30,
            1..=600,
        )?;
        let rotation = RotationPolicy::read(&get)?;
        let credential = match (get("IDENTITY_ENDPOINT"), get("IDENTITY_HEADER")) {
            (Some(_), Some(_)) => CredentialChoice::ManagedIdentity {
                client_id: parse_client_id(get("AZURE_CLIENT_ID"))?,
            },
            _ => CredentialChoice::DeveloperTools,
        };

        let config = Config {
            arm_endpoint,
            arm_scope,
            subscriptions,
            max_concurrency,
            request_timeout: Duration::from_secs(timeout as u64),
            credential,
            identity_header: get("IDENTITY_HEADER").map(secrecy::SecretString::from),
            rotation,
            verification: VerificationPolicy::read(&get)?,
            event_deadline: seconds(
                "KEYSYNC_EVENT_DEADLINE_SECS",
                get("KEYSYNC_EVENT_DEADLINE_SECS"),
                25,
                1..=600,
            )?,
            timer_deadline: seconds(
                "KEYSYNC_TIMER_DEADLINE_SECS",
                get("KEYSYNC_TIMER_DEADLINE_SECS"),
                270,
                1..=3600,
            )?,
            http_deadline: seconds(
                "KEYSYNC_HTTP_DEADLINE_SECS",
                get("KEYSYNC_HTTP_DEADLINE_SECS"),
                200,
                1..=220,
            )?,
        };
        config.check_rotation_scope()?;
        Ok(config)
    }

    /// An account listed for rotation must be in a subscription in scope: keysync reads and
    /// writes nothing elsewhere, so it could never rotate it.
    fn check_rotation_scope(&self) -> Result<(), ConfigError> {
        let outside = self
            .rotation
            .accounts
            .iter()
            .find(|a| !self.in_scope(a.subscription()));
        match outside {
            Some(outside) => Err(ConfigError::new(
                "KEYSYNC_ROTATE_ACCOUNTS",
                format!(
                    "{} is in subscription {}, which KEYSYNC_SUBSCRIPTIONS does not list: keysync could never rotate it",
                    outside.name(),
                    outside.subscription()
                ),
            )),
            None => Ok(()),
        }
    }

    /// True when `subscription` is in scope (subscription ids compare case-insensitively).
    pub fn in_scope(&self, subscription: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.eq_ignore_ascii_case(subscription))
    }
}

fn parse_endpoint(value: Option<String>) -> Result<Url, ConfigError> {
    const NAME: &str = "KEYSYNC_ARM_ENDPOINT";
    let raw = value.unwrap_or_else(|| DEFAULT_ARM_ENDPOINT.to_string());
    let url = Url::parse(&raw).map_err(|e| ConfigError::new(NAME, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return Err(ConfigError::new(
            NAME,
            "must be an http(s) base URL such as https://management.azure.com",
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ConfigError::new(
            NAME,
            "plain http is only allowed for a local emulator on loopback",
        ));
    }
    Ok(url)
}

/// True when `url` names this machine, where plain http cannot be overheard.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn parse_subscriptions(value: Option<String>) -> Result<Vec<String>, ConfigError> {
    const NAME: &str = "KEYSYNC_SUBSCRIPTIONS";
    let raw = value.ok_or_else(|| {
        ConfigError::new(NAME, "required: a comma-separated list of subscription ids")
    })?;
    let mut subscriptions: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Ok(id) = uuid::Uuid::try_parse(item) else {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "'{}' is not a subscription id (a GUID)",
                    printable(item, 60)
                ),
            ));
        };
        // ARM writes subscription ids hyphenated and in lower case; a braced or unhyphenated
        // GUID would never equal the one in an event or a resource id.
        let id = id.hyphenated().to_string();
        if !subscriptions.contains(&id) {
            subscriptions.push(id);
        }
    }
    if subscriptions.is_empty() {
        return Err(ConfigError::new(NAME, "lists no subscription"));
    }
    Ok(subscriptions)
}

/// A user-assigned identity is chosen by its client id, a GUID; anything else would only fail
/// later, at the first token request, with a message that does not name the setting.
fn parse_client_id(value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value {
        Some(id) if uuid::Uuid::try_parse(&id).is_err() => Err(ConfigError::new(
            "AZURE_CLIENT_ID",
            format!("'{}' is not a client id (a GUID)", printable(&id, 60)),
        )),
        other => Ok(other),
    }
}

fn seconds(
    name: &'static str,
    value: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    parse_number(name, value, default, range).map(|n| Duration::from_secs(n as u64))
}

pub(crate) fn parse_number(
    name: &'static str,
    value: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ConfigError> {
    let Some(raw) = value else {
        return Ok(default as usize);
    };
    match raw.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n as usize),
        _ => Err(ConfigError::new(
            name,
            format!(
                "'{raw}' is not a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";
    const CLIENT: &str = "9e2c5a41-7d3b-4f60-8c1e-2b7a90d4e315";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_to_public_arm_and_developer_credentials() {
        let c = config(&[("KEYSYNC_SUBSCRIPTIONS", SUB)]).unwrap();
        assert_eq!(c.arm_endpoint.as_str(), "https://management.azure.com/");
        assert_eq!(c.arm_scope, DEFAULT_ARM_SCOPE);
        assert_eq!(c.subscriptions, vec![SUB.to_string()]);
        assert_eq!(c.credential, CredentialChoice::DeveloperTools);
    }

    #[test]
    fn managed_identity_needs_both_variables() {
        let c = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
            ("AZURE_CLIENT_ID", CLIENT),
        ])
        .unwrap();
        assert_eq!(
            c.credential,
            CredentialChoice::ManagedIdentity {
                client_id: Some(CLIENT.into())
            }
        );
        let err = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
            ("AZURE_CLIENT_ID", "id-keysync"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "AZURE_CLIENT_ID: 'id-keysync' is not a client id (a GUID)"
        );
        let c = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("IDENTITY_ENDPOINT", "http://x"),
        ])
        .unwrap();
        assert_eq!(c.credential, CredentialChoice::DeveloperTools);
    }

    #[test]
    fn subscriptions_are_validated_and_deduplicated() {
        let upper = SUB.to_uppercase();
        let c = config(&[("KEYSYNC_SUBSCRIPTIONS", &format!(" {SUB}, {upper} ,"))]).unwrap();
        assert_eq!(c.subscriptions.len(), 1);
        assert!(c.in_scope(&upper));
        let err = config(&[("KEYSYNC_SUBSCRIPTIONS", "prod")]).unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_SUBSCRIPTIONS");
        // Braced and unhyphenated forms are the same GUID, written as ARM writes it.
        let braced = format!("{{{upper}}}");
        let simple = SUB.replace('-', "");
        let c = config(&[("KEYSYNC_SUBSCRIPTIONS", &format!("{braced},{simple}"))]).unwrap();
        assert_eq!(c.subscriptions, vec![SUB.to_string()]);
        assert_eq!(config(&[]).unwrap_err().setting, "KEYSYNC_SUBSCRIPTIONS");
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        let err = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_ARM_ENDPOINT", "http://arm.example.com"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_ARM_ENDPOINT");
        let c = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_ARM_ENDPOINT", "http://127.0.0.1:8080"),
        ])
        .unwrap();
        assert_eq!(c.arm_endpoint.port(), Some(8080));
    }

    #[test]
    fn numbers_out_of_range_name_the_setting() {
        let err = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_MAX_CONCURRENCY", "0"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_MAX_CONCURRENCY");
        assert!(err.to_string().contains("from 1 to 256"), "{err}");
    }

    #[test]
    fn an_account_to_rotate_must_be_in_a_subscription_in_scope() {
        let account = |sub: &str| {
            format!(
                "/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stdue"
            )
        };
        let inside = account(&SUB.to_uppercase());
        let c = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_ROTATE_ACCOUNTS", &inside),
        ])
        .unwrap();
        assert_eq!(c.rotation.accounts.len(), 1);
        let outside = account("99999999-2222-3333-4444-555555555555");
        let err = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_ROTATE_ACCOUNTS", &format!("{inside},{outside}")),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "KEYSYNC_ROTATE_ACCOUNTS: stdue is in subscription 99999999-2222-3333-4444-555555555555, which KEYSYNC_SUBSCRIPTIONS does not list: keysync could never rotate it"
        );
    }

    #[test]
    fn the_http_deadline_stays_inside_azures_230_seconds() {
        let c = config(&[("KEYSYNC_SUBSCRIPTIONS", SUB)]).unwrap();
        assert_eq!(c.http_deadline, Duration::from_secs(200));
        let err = config(&[
            ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ("KEYSYNC_HTTP_DEADLINE_SECS", "230"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "KEYSYNC_HTTP_DEADLINE_SECS: '230' is not a whole number from 1 to 220"
        );
    }
}
