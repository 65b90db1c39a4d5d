//! The storage check after a run: every AccountKey and SAS datastore on the account is tried
//! against storage with the credential it now holds, a SAS token that storage rejects is
//! re-minted when the policy allows, and each outcome lands on the datastore's report entry.
//!
//! Verification never decides whether a run failed. A rejected credential is one keysync has no
//! better replacement for, so having the event delivered again would only repeat the same check;
//! the report and a warning say what needs a human. Only a failed re-mint, which is a write like
//! any key update, fails the run, so that it is retried with it.

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::Reconciler;
use super::execute::explain;
use super::plan::AccountFacts;
use crate::arm::ArmClient;
use crate::config::VerificationPolicy;
use crate::model::ml::{CredentialsKind, Datastore};
use crate::model::storage::{AccountKeys, KeySlot, StorageAccount};
use crate::report::{
    Action, CredentialUsed, Entry, Held, ObjectKind, Outcome, Report, SAS_TOKEN, Verification,
    VerifyOutcome,
};
use crate::resource_id::{DatastoreId, WorkspaceId};
use crate::storage::sas::{SasError, SasToken, SignedResource, format_time};
use crate::storage::shared_key::AccountKey;
use crate::storage::verify::{Checker, Credential, DeadEndpoints, Service, Target};

/// The storage check's settings and HTTP client.
pub(super) struct Verifier {
    policy: VerificationPolicy,
    checker: Checker,
}

impl Reconciler {
    /// Checks credentials against storage after every run that applies, under `policy` (nothing
    /// is checked when it is off).
    pub fn with_verification(mut self, policy: &VerificationPolicy) -> Self {
        if !policy.enabled {
            self.verifier = None;
            return self;
        }
        self.verifier = match Checker::new(policy.timeout) {
            Ok(checker) => Some(Verifier {
                policy: policy.clone(),
                checker,
            }),
            Err(e) => {
                tracing::error!(error = %e, "storage checks are off: no HTTP client");
                None
            }
        };
        self
    }

    /// How long a re-minted SAS token is valid, when `KEYSYNC_REMINT_SAS` allows re-minting.
    pub(crate) fn sas_remint_lifetime(&self) -> Option<std::time::Duration> {
        self.verifier.as_ref().and_then(|v| v.policy.remint_sas)
    }

    /// Checks every AccountKey and SAS datastore of `report` on the account and records what
    /// storage said. Does nothing in a dry run or when verification is off.
    pub(super) async fn verify_credentials(
        &self,
        run: VerifyRun<'_>,
        dry_run: bool,
        report: &mut Report,
    ) {
        let Some(verifier) = &self.verifier else {
            return;
        };
        if dry_run {
            return;
        }
        let checks = Checks {
            arm: self.arm_until(run.deadline),
            checker: verifier.checker.until(run.deadline),
            verifier,
            run,
            dead: DeadEndpoints::default(),
        };
        let jobs: Vec<Job> = report
            .entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| Job::of(index, entry))
            .collect();
        let findings: Vec<(usize, Finding)> = futures::stream::iter(jobs)
            .map(|job| checks.run(job))
            .buffer_unordered(verifier.policy.concurrency)
            .collect()
            .await;
        for (index, finding) in findings {
            finding.apply(&mut report.entries[index]);
        }
    }
}

/// What a run knows that the checks need.
pub(super) struct VerifyRun<'a> {
    pub account: &'a StorageAccount,
    pub facts: &'a AccountFacts,
    pub keys: &'a AccountKeys,
    /// The key a re-minted SAS is signed with.
    pub target: KeySlot,
    /// No check starts after this; those left are reported not checked.
    pub deadline: Option<tokio::time::Instant>,
}

/// One datastore to check: its entry, its id, and the key it holds when the run knows it.
struct Job {
    index: usize,
    id: DatastoreId,
    known: Option<KeySlot>,
    sas: bool,
}

impl Job {
    /// A job for an entry about an AccountKey or SAS datastore on the account.
    fn of(index: usize, entry: &Entry) -> Option<Job> {
        // Deferred work is the next run's, and so is checking it.
        if entry.kind != ObjectKind::Datastore || entry.outcome == Outcome::Deferred {
            return None;
        }
        let sas = entry.reason.as_deref() == Some(SAS_TOKEN);
        let account_key = entry.held.is_some()
            || entry.action == Action::UpdateKey
            || entry.outcome == Outcome::Failed;
        if !sas && !account_key {
            return None;
        }
        let known = match (entry.outcome, entry.key, entry.held) {
            (Outcome::Updated, Some(slot), _) => Some(slot),
            (Outcome::InSync, _, Some(Held::Key1)) => Some(KeySlot::Key1),
            (Outcome::InSync, _, Some(Held::Key2)) => Some(KeySlot::Key2),
            _ => None,
        };
        let id = WorkspaceId::parse(&entry.workspace)
            .ok()?
            .datastore(entry.datastore.as_deref()?)
            .ok()?;
        Some(Job {
            index,
            id,
            known,
            sas,
        })
    }
}

/// What a check found, to be written onto the entry.
#[derive(Default)]
struct Finding {
    verification: Option<Verification>,
    outcome: Option<Outcome>,
    action: Option<Action>,
    key: Option<KeySlot>,
    reason: Option<String>,
    /// Whether a human should look at the datastore, when the check decides it.
    attention: Option<bool>,
}

impl Finding {
    fn checked(verification: Verification) -> Self {
        Finding {
            verification: Some(verification),
            ..Finding::default()
        }
    }

    fn apply(self, entry: &mut Entry) {
        let trouble = self.verification.as_ref().is_some_and(|v| {
            matches!(
                v.outcome,
                VerifyOutcome::Rejected | VerifyOutcome::Unreachable | VerifyOutcome::Inconclusive
            )
        });
        entry.attention = self.attention.unwrap_or(entry.attention) || trouble;
        entry.verification = self.verification.or(entry.verification.take());
        if let Some(outcome) = self.outcome {
            entry.outcome = outcome;
        }
        if let Some(action) = self.action {
            entry.action = action;
        }
        if self.key.is_some() {
            entry.key = self.key;
        }
        if self.reason.is_some() {
            entry.reason = self.reason;
        }
    }
}

/// The checks of one run.
struct Checks<'a> {
    /// Bound to the run's deadline, as the checker is.
    arm: ArmClient,
    checker: Checker,
    verifier: &'a Verifier,
    run: VerifyRun<'a>,
    dead: DeadEndpoints,
}

impl Checks<'_> {
    async fn run(&self, job: Job) -> (usize, Finding) {
        let used = match job.sas {
            true => CredentialUsed::Sas,
            false => CredentialUsed::AccountKey,
        };
        let datastore = match self.arm.get_datastore(&job.id).await {
            Ok(datastore) => datastore,
            Err(e) => {
                let detail = format!("could not read the datastore: {}", explain(&e));
                return (job.index, not_checked(used, detail));
            }
        };
        let finding = match (
            self.run.facts.holds(&datastore),
            datastore.credentials_kind(),
        ) {
            (true, CredentialsKind::AccountKey) => self.account_key(&job, &datastore).await,
            (true, CredentialsKind::Sas) => self.sas(&job, &datastore).await,
            _ => Finding::default(),
        };
        if let Some(v) = &finding.verification {
            tracing::debug!(
                datastore = job.id.name(),
                verification = %v.outcome,
                code = v.code.as_deref().unwrap_or("-"),
                "storage check"
            );
        }
        (job.index, finding)
    }

    async fn account_key(&self, job: &Job, datastore: &Datastore) -> Finding {
        let used = CredentialUsed::AccountKey;
        let target = match self.target(datastore) {
            Ok(target) => target,
            Err(reason) => return not_checked(used, reason),
        };
        let stored = match job.known {
            Some(slot) => Ok(self.run.keys.get(slot).clone()),
            None => self.stored_key(&job.id).await,
        };
        let key = match stored.and_then(|secret| self.account_key_of(&secret)) {
            Ok(key) => key,
            Err(reason) => return not_checked(used, reason),
        };
        let credential = Credential::Key(&key);
        Finding::checked(self.checker().check(&target, credential, &self.dead).await)
    }

    async fn stored_key(&self, id: &DatastoreId) -> Result<SecretString, String> {
        match self.arm.list_datastore_secrets(id).await {
            Ok(secrets) => secrets
                .key
                .ok_or_else(|| "no account key is stored".to_string()),
            Err(e) if e.is_not_found() => Err("no account key is stored".into()),
            Err(e) => Err(format!("could not read the stored key: {}", explain(&e))),
        }
    }

    async fn stored_token(&self, id: &DatastoreId) -> Result<SecretString, String> {
        let missing = || "no SAS token is stored".to_string();
        match self.arm.list_datastore_secrets(id).await {
            Ok(secrets) => secrets.sas_token.ok_or_else(missing),
            Err(e) if e.is_not_found() => Err(missing()),
            Err(e) => Err(format!("could not read the token: {}", explain(&e))),
        }
    }

    fn account_key_of(&self, secret: &SecretString) -> Result<AccountKey, String> {
        AccountKey::new(&self.run.account.name, secret)
            .map_err(|_| "the stored key is not base64, so no storage account accepts it".into())
    }

    async fn sas(&self, job: &Job, datastore: &Datastore) -> Finding {
        let used = CredentialUsed::Sas;
        let unchecked = |reason: String| Finding {
            reason: Some("SAS token: could not be checked against storage".into()),
            ..not_checked(used, reason)
        };
        let target = match self.target(datastore) {
            Ok(target) => target,
            Err(reason) => return unchecked(reason),
        };
        let token = match self.stored_token(&job.id).await {
            Ok(token) => token,
            Err(reason) => return unchecked(reason),
        };
        let verification = self
            .checker()
            .check(&target, Credential::Sas(&token), &self.dead)
            .await;
        let parsed = SasToken::parse(token.expose_secret());
        match verification.outcome {
            VerifyOutcome::Verified => Finding {
                outcome: Some(Outcome::InSync),
                action: Some(Action::None),
                attention: Some(false),
                reason: Some(match &parsed {
                    Ok(token) => format!("SAS token works: {}", token.summary()),
                    Err(_) => "SAS token works".into(),
                }),
                ..Finding::checked(verification)
            },
            VerifyOutcome::Rejected => self.dead_sas(job, &target, parsed, verification).await,
            _ => Finding {
                reason: Some("SAS token: could not be checked against storage".into()),
                ..Finding::checked(verification)
            },
        }
    }

    /// A token storage rejected: re-mint it when allowed and possible, else say why not.
    async fn dead_sas(
        &self,
        job: &Job,
        target: &Target,
        parsed: Result<SasToken, SasError>,
        rejected: Verification,
    ) -> Finding {
        let code = rejected.code.clone().unwrap_or_else(|| "rejected".into());
        let minted = parsed
            .map_err(|e| format!("SAS token rejected by storage ({code}); not re-minted: {e}"))
            .and_then(|old| Ok((self.remint(&old, target, &code)?, old)));
        match minted {
            Ok((token, old)) => self.replace_token(job, target, &old, &token, &code).await,
            Err(reason) => Finding {
                outcome: Some(Outcome::Skipped),
                action: Some(Action::Skip),
                reason: Some(reason),
                ..Finding::checked(rejected)
            },
        }
    }

    /// A token with `old`'s scope, signed with the target key; or, in words, why there is none.
    fn remint(&self, old: &SasToken, target: &Target, code: &str) -> Result<SecretString, String> {
        let Some(lifetime) = self.verifier.policy.remint_sas else {
            return Err(format!(
                "SAS token rejected by storage ({code}): signed with a regenerated key, or expired; set KEYSYNC_REMINT_SAS=true to have keysync re-mint it, or replace it by hand"
            ));
        };
        let now = OffsetDateTime::now_utc();
        if let Some(expiry) = old.expiry().filter(|se| *se <= now) {
            return Err(format!(
                "SAS token expired at {}: not re-minted, since its owner chose that expiry; replace it by hand",
                format_time(expiry)
            ));
        }
        if let Some(start) = old.start().filter(|st| *st > now) {
            let start = format_time(start);
            return Err(format!("SAS token not valid before {start}: left alone"));
        }
        let resource = match target.service {
            Service::Blob => SignedResource::Container(&target.name),
            Service::File => SignedResource::Share(&target.name),
        };
        let key = self.account_key_of(self.run.keys.get(self.run.target))?;
        old.remint(&key, resource, now + lifetime)
            .map_err(|e| format!("SAS token rejected by storage ({code}); not re-minted: {e}"))
    }

    /// Stores the re-minted token in place and checks it.
    async fn replace_token(
        &self,
        job: &Job,
        target: &Target,
        old: &SasToken,
        token: &SecretString,
        code: &str,
    ) -> Finding {
        let failed = |reason: String| Finding {
            outcome: Some(Outcome::Failed),
            action: Some(Action::UpdateSas),
            key: Some(self.run.target),
            reason: Some(reason),
            ..Finding::default()
        };
        if let Err(reason) = self.store_token(&job.id, token).await {
            return failed(format!(
                "SAS token rejected by storage ({code}); storing a re-minted one failed: {reason}"
            ));
        }
        tracing::info!(
            datastore = job.id.name(),
            key = %self.run.target,
            outcome = "reminted",
            "SAS token"
        );
        let verification = self
            .checker()
            .check(target, Credential::Sas(token), &self.dead)
            .await;
        let summary = SasToken::parse(token.expose_secret())
            .map(|t| t.summary())
            .unwrap_or_else(|_| old.summary());
        Finding {
            outcome: Some(Outcome::Updated),
            action: Some(Action::UpdateSas),
            attention: Some(false),
            key: Some(self.run.target),
            reason: Some(format!(
                "SAS token rejected by storage ({code}); replaced by a re-minted {summary}"
            )),
            ..Finding::checked(verification)
        }
    }

    /// GET the datastore, replace only its secret with `token`, PUT it back whole.
    async fn store_token(&self, id: &DatastoreId, token: &SecretString) -> Result<(), String> {
        let current = self.arm.get_datastore(id).await.map_err(|e| explain(&e))?;
        // Someone may have re-pointed or re-typed the datastore since it was read.
        if !self.run.facts.holds(&current) || current.credentials_kind() != CredentialsKind::Sas {
            return Err("the datastore changed while keysync was working: left alone".into());
        }
        let body = current
            .with_sas_token(token)
            .ok_or("no credentials object to update: left alone")?;
        self.arm
            .put_datastore(id, &body)
            .await
            .map(|_| ())
            .map_err(|e| explain(&e))
    }

    /// The container or share a datastore names, under the account's endpoint for it.
    fn target(&self, datastore: &Datastore) -> Result<Target, String> {
        let kind = datastore.datastore_type().unwrap_or("unknown");
        let (service, name) = match kind {
            "AzureBlob" | "AzureDataLakeGen2" => (Service::Blob, datastore.container()),
            "AzureFile" => (Service::File, datastore.file_share()),
            _ => {
                return Err(format!(
                    "a {kind} datastore has no container or share to check"
                ));
            }
        };
        let name = name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| format!("the {kind} datastore names no container or share"))?;
        let endpoints = self.run.account.properties.primary_endpoints.as_ref();
        let (endpoint, service_name) = match service {
            Service::Blob => (endpoints.and_then(|e| e.blob.as_deref()), "blob"),
            Service::File => (endpoints.and_then(|e| e.file.as_deref()), "file"),
        };
        let endpoint =
            endpoint.ok_or_else(|| format!("the account lists no {service_name} endpoint"))?;
        let endpoint = url::Url::parse(endpoint)
            .map_err(|_| format!("the account's {service_name} endpoint is not a URL"))?;
        Ok(Target {
            service,
            endpoint,
            name: name.trim().to_string(),
        })
    }

    fn checker(&self) -> &Checker {
        &self.checker
    }
}

fn not_checked(used: CredentialUsed, detail: String) -> Finding {
    Finding::checked(Verification::new(VerifyOutcome::NotChecked, used, detail))
}
