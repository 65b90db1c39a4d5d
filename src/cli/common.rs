//! The flags `plan`, `sync` and `rotate` share, and the configuration they make: each flag
//! stands in for one of the handler's environment variables and wins over it.

use clap::Args;

use crate::config::{Config, ConfigError};

/// Where Azure is and what is in scope, and how to print.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// The ARM base URL (a sovereign cloud, or the local emulator). [env: KEYSYNC_ARM_ENDPOINT]
    /// [default: https://management.azure.com]
    #[arg(long, value_name = "URL")]
    pub arm_endpoint: Option<String>,
    /// The token scope for ARM. [env: KEYSYNC_ARM_SCOPE] [default:
    /// https://management.azure.com/.default]
    #[arg(long, value_name = "SCOPE")]
    pub arm_scope: Option<String>,
    /// The subscriptions in scope, comma-separated ids. [env: KEYSYNC_SUBSCRIPTIONS]
    #[arg(long, value_name = "IDS")]
    pub subscriptions: Option<String>,
    /// Print the result as JSON on stdout instead of a table (shape in the README).
    #[arg(long)]
    pub json: bool,
}

/// Each flag and the variable it stands in for.
const FLAGS: [(&str, &str); 3] = [
    ("--arm-endpoint", "KEYSYNC_ARM_ENDPOINT"),
    ("--arm-scope", "KEYSYNC_ARM_SCOPE"),
    ("--subscriptions", "KEYSYNC_SUBSCRIPTIONS"),
];

impl CommonArgs {
    /// The configuration: flags first, then `env` (the process environment, in `main`).
    /// Credentials follow the environment: managed identity where `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` are set (in Azure, and with the emulator), developer tools otherwise.
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        Config::from_lookup(|name| self.flag_for(name).or_else(|| env(name))).map_err(usage)
    }

    /// [`config`](Self::config) from the process environment, where a value that is not UTF-8
    /// is refused by name (see [`Config::from_env`]).
    pub fn config_from_env(&self) -> Result<Config, String> {
        Config::from_env_over(|name| self.flag_for(name)).map_err(usage)
    }

    fn flag_for(&self, variable: &str) -> Option<String> {
        match variable {
            "KEYSYNC_ARM_ENDPOINT" => self.arm_endpoint.clone(),
            "KEYSYNC_ARM_SCOPE" => self.arm_scope.clone(),
            "KEYSYNC_SUBSCRIPTIONS" => self.subscriptions.clone(),
            _ => None,
        }
    }
}

/// The configuration error, saying which flag or variable to set.
fn usage(e: ConfigError) -> String {
    match FLAGS.iter().find(|(_, variable)| *variable == e.setting) {
        Some((flag, variable)) => format!("{e} (pass {flag} or set {variable})"),
        None => format!("{e} (fix the {} environment variable)", e.setting),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "11111111-2222-3333-4444-555555555555";

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = CommonArgs {
            arm_endpoint: Some("http://127.0.0.1:9".into()),
            ..CommonArgs::default()
        };
        let config = args
            .config(env(&[
                (
                    "KEYSYNC_ARM_ENDPOINT",
                    "https://management.usgovcloudapi.net",
                ),
                ("KEYSYNC_SUBSCRIPTIONS", SUB),
            ]))
            .unwrap();
        assert_eq!(config.arm_endpoint.as_str(), "http://127.0.0.1:9/");
        assert_eq!(config.subscriptions, [SUB]);
    }

    #[test]
    fn a_missing_setting_names_the_flag_and_the_variable() {
        let err = CommonArgs::default().config(env(&[])).unwrap_err();
        assert!(err.starts_with("KEYSYNC_SUBSCRIPTIONS: required"), "{err}");
        assert!(
            err.ends_with("(pass --subscriptions or set KEYSYNC_SUBSCRIPTIONS)"),
            "{err}"
        );
        let err = CommonArgs::default()
            .config(env(&[
                ("KEYSYNC_SUBSCRIPTIONS", SUB),
                ("KEYSYNC_ROTATE_AFTER_DAYS", "0"),
            ]))
            .unwrap_err();
        assert!(
            err.contains("fix the KEYSYNC_ROTATE_AFTER_DAYS environment variable"),
            "{err}"
        );
    }
}
