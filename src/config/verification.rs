//! The verification policy: whether keysync checks datastore credentials against storage after
//! a run, how long and how many at once, and whether it re-mints SAS tokens storage rejects.

use std::time::Duration;

use super::ConfigError;

/// How keysync checks credentials against the storage data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPolicy {
    /// `KEYSYNC_VERIFY`: check every AccountKey and SAS datastore on the account after a run.
    pub enabled: bool,
    /// `KEYSYNC_VERIFY_TIMEOUT_SECS`: one check, from connecting to the end of the answer.
    pub timeout: Duration,
    /// `KEYSYNC_VERIFY_CONCURRENCY`: checks in flight at once in one run.
    pub concurrency: usize,
    /// `KEYSYNC_REMINT_SAS` and `KEYSYNC_SAS_LIFETIME_DAYS`: when set, a SAS token that storage
    /// rejects is replaced by one with the same scope, valid for this long.
    pub remint_sas: Option<Duration>,
}

impl Default for VerificationPolicy {
    /// On, 5 s per check, 8 at once, no re-minting.
    fn default() -> Self {
        VerificationPolicy {
            enabled: true,
            timeout: Duration::from_secs(5),
            concurrency: 8,
            remint_sas: None,
        }
    }
}

impl VerificationPolicy {
    /// Reads the policy; `get` returns trimmed, non-empty values.
    pub(super) fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let enabled = parse_bool("KEYSYNC_VERIFY", get("KEYSYNC_VERIFY"), true)?;
        let timeout = super::parse_number(
            "KEYSYNC_VERIFY_TIMEOUT_SECS",
            get("KEYSYNC_VERIFY_TIMEOUT_SECS"),
            5,
            1..=60,
        )?;
        let concurrency = super::parse_number(
            "KEYSYNC_VERIFY_CONCURRENCY",
            get("KEYSYNC_VERIFY_CONCURRENCY"),
            8,
            1..=64,
        )?;
        let remint = parse_bool("KEYSYNC_REMINT_SAS", get("KEYSYNC_REMINT_SAS"), false)?;
        let days = super::parse_number(
            "KEYSYNC_SAS_LIFETIME_DAYS",
            get("KEYSYNC_SAS_LIFETIME_DAYS"),
            30,
            1..=365,
        )?;
        if remint && !enabled {
            return Err(ConfigError::new(
                "KEYSYNC_REMINT_SAS",
                "needs KEYSYNC_VERIFY: keysync re-mints only the tokens storage rejects",
            ));
        }
        Ok(VerificationPolicy {
            enabled,
            timeout: Duration::from_secs(timeout as u64),
            concurrency,
            remint_sas: remint.then(|| Duration::from_secs(days as u64 * 86_400)),
        })
    }
}

fn parse_bool(
    name: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(raw) = value else {
        return Ok(default);
    };
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("'{raw}' is not true or false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn policy(pairs: &[(&str, &str)]) -> Result<VerificationPolicy, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        VerificationPolicy::read(&|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn verification_is_on_and_reminting_off_by_default() {
        assert_eq!(policy(&[]).unwrap(), VerificationPolicy::default());
    }

    #[test]
    fn reminting_takes_a_lifetime_and_needs_verification() {
        let p = policy(&[
            ("KEYSYNC_REMINT_SAS", "TRUE"),
            ("KEYSYNC_SAS_LIFETIME_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(p.remint_sas, Some(Duration::from_secs(7 * 86_400)));
        let err =
            policy(&[("KEYSYNC_VERIFY", "false"), ("KEYSYNC_REMINT_SAS", "true")]).unwrap_err();
        assert_eq!(err.setting, "KEYSYNC_REMINT_SAS");
        let off = policy(&[("KEYSYNC_VERIFY", "0")]).unwrap();
        assert!(!off.enabled);
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert_eq!(
            policy(&[("KEYSYNC_VERIFY", "maybe")]).unwrap_err().setting,
            "KEYSYNC_VERIFY"
        );
        assert_eq!(
            policy(&[("KEYSYNC_VERIFY_TIMEOUT_SECS", "0")])
                .unwrap_err()
                .setting,
            "KEYSYNC_VERIFY_TIMEOUT_SECS"
        );
        assert_eq!(
            policy(&[("KEYSYNC_SAS_LIFETIME_DAYS", "400")])
                .unwrap_err()
                .setting,
            "KEYSYNC_SAS_LIFETIME_DAYS"
        );
    }
}
