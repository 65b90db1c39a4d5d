//! The storage check after a run: every AccountKey and SAS datastore on the account is tried
//! against storage with the credential it now holds, a SAS token that storage rejects is
//! re-minted when the policy allows, and each outcome lands on the datastore's report entry.
//!
//! Verification never decides whether a run failed. A rejected credential is one keysync has no
//! better replacement for, so having the event delivered again would only repeat the same check;
//! the report and a warning say what needs a human. Only a failed re-mint, which is a write like
//! any key update, fails the run, so that it is retried with it.

use std::collections::HashSet;

use futures::StreamExt;
use futures::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::Reconciler;
use super::execute::{self, reported};
use super::plan::{AccountFacts, ObservedDatastore, SecretState};
use super::run::FollowUp;
use crate::arm::ArmClient;
use crate::config::{VerificationPolicy, is_loopback};
use crate::model::ml::{CredentialsKind, Datastore};
use crate::model::storage::{AccountKeys, KeySlot, StorageAccount};
use crate::report::{Action, CredentialUsed, Entry, Outcome, Report, Verification, VerifyOutcome};
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

    /// Checks the credential of every datastore the run marked for it (each AccountKey and SAS
    /// datastore on the account) and records what storage said on its entry. Does nothing in a
    /// dry run or when verification is off.
    pub(super) async fn verify_credentials(
        &self,
        run: VerifyRun<'_>,
        follow_ups: Vec<(usize, FollowUp)>,
        dry_run: bool,
        report: &mut Report,
    ) {
        if dry_run {
            return;
        }
        let Some(verifier) = &self.verifier else {
            // The plan's wording ("checked by sync") would be wrong here: this run wrote.
            for entry in report.entries.iter_mut().filter(|e| e.sas_token) {
                entry.reason = Some(crate::report::SAS_TOKEN_UNCHECKED.to_string());
            }
            return;
        };
        let checks = Checks {
            arm: self.arm_until(run.deadline),
            checker: verifier.checker.until(run.deadline),
            verifier,
            run,
            dead: DeadEndpoints::default(),
        };
        let (jobs, mut resyncs) = split(follow_ups);
        let findings: Vec<(Job, Finding)> = futures::stream::iter(jobs)
            .map(|job| checks.run(job))
            .buffer_unordered(verifier.policy.concurrency)
            .collect()
            .await;
        let mut reminted = HashSet::new();
        for (job, finding) in findings {
            if finding.reminted() {
                reminted.insert(job.subject.id.workspace().as_str().to_ascii_lowercase());
            }
            finding.apply(&mut report.entries[job.index]);
        }
        resyncs.retain(|(_, ws)| reminted.contains(&ws.as_str().to_ascii_lowercase()));
        self.resync_after_remints(&checks, resyncs, report).await;
    }

    /// Resyncs again each workspace whose default storage is the account and one of whose SAS
    /// tokens was just re-minted: a workspace is resynced after the last change to its
    /// datastores (DESIGN.md section 3, step 6), and the run's own resync came before the
    /// re-mint, which only the storage check can decide.
    async fn resync_after_remints(
        &self,
        checks: &Checks<'_>,
        resyncs: Vec<(usize, WorkspaceId)>,
        report: &mut Report,
    ) {
        let arm = &checks.arm;
        let done = join_all(resyncs.into_iter().map(|(index, workspace)| async move {
            let entry = execute::resync(arm, &workspace).await;
            (index, workspace, entry)
        }))
        .await;
        for (index, workspace, mut entry) in done {
            match entry.outcome {
                Outcome::Resynced | Outcome::Accepted => {
                    let key_time = checks.run.facts.newest_key_time();
                    self.remember_resync(&workspace, key_time);
                }
                // So that the redelivery the failure brings resyncs it, whatever it plans.
                _ => self.forget_resync(&workspace),
            }
            if entry.outcome == Outcome::Resynced {
                entry.reason = Some("resynced after its re-minted SAS tokens were stored".into());
            }
            report.entries[index] = entry;
        }
    }
}

/// The checks to make, and the workspaces' resync lines (with where each entry is).
fn split(follow_ups: Vec<(usize, FollowUp)>) -> (Vec<Job>, Vec<(usize, WorkspaceId)>) {
    let mut jobs = Vec::new();
    let mut resyncs = Vec::new();
    for (index, follow_up) in follow_ups {
        match follow_up {
            FollowUp::Check(subject) => jobs.push(Job { index, subject }),
            FollowUp::Resync(workspace) => resyncs.push((index, workspace)),
            FollowUp::Nothing => {}
        }
    }
    (jobs, resyncs)
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

/// A datastore whose credential the storage check tries, with what the run already knows of it,
/// so that the check repeats no ARM request the run has made.
pub(super) struct Subject {
    id: DatastoreId,
    /// As listed, or as this run's `PUT` stored it.
    datastore: Datastore,
    stored: Stored,
}

/// The credential a datastore holds, as far as the run knows it.
enum Stored {
    /// An account key: this current key of the account.
    Key(KeySlot),
    /// An account key that is neither current key, as `listSecrets` returned it.
    OldKey(SecretString),
    /// An account key the run does not have; why, in words.
    UnknownKey(&'static str),
    /// A SAS token, read when it is checked: the run has not read it.
    SasToken,
}

impl Subject {
    /// What the check needs of a datastore whose entry is `entry`: an AccountKey or SAS datastore
    /// on the account, observed as `observed`, stored as `written` if this run updated it.
    /// `None` when there is nothing to check.
    pub(super) fn of(
        observed: &ObservedDatastore,
        stale_key: Option<SecretString>,
        entry: &Entry,
        written: Option<Datastore>,
        facts: &AccountFacts,
    ) -> Option<Subject> {
        // Deferred work is the next run's, and so is checking it.
        if entry.outcome == Outcome::Deferred || !facts.holds(&observed.datastore) {
            return None;
        }
        let stored = match observed.datastore.credentials_kind() {
            CredentialsKind::Sas => Stored::SasToken,
            CredentialsKind::AccountKey => account_key(observed, stale_key, entry)?,
            _ => return None,
        };
        Some(Subject {
            id: observed.id.clone(),
            datastore: written.unwrap_or_else(|| observed.datastore.clone()),
            stored,
        })
    }
}

/// The account key a datastore holds after the run; `None` when it changed under keysync.
fn account_key(
    observed: &ObservedDatastore,
    stale_key: Option<SecretString>,
    entry: &Entry,
) -> Option<Stored> {
    let stored = match (entry.outcome, entry.key, &observed.secret) {
        (Outcome::Updated, Some(slot), _) => Stored::Key(slot),
        // Re-pointed or re-typed while keysync worked: what it holds now is not known.
        (Outcome::Skipped, _, _) => return None,
        (_, _, Some(SecretState::Current(slot))) => Stored::Key(*slot),
        (_, _, Some(SecretState::Stale)) => match stale_key {
            Some(key) => Stored::OldKey(key),
            None => Stored::UnknownKey("the stored key was not kept"),
        },
        (_, _, Some(SecretState::Missing)) => Stored::UnknownKey("no account key is stored"),
        _ => Stored::UnknownKey("the stored key could not be read"),
    };
    Some(stored)
}

/// One datastore to check, and where its entry is in the report.
struct Job {
    index: usize,
    subject: Subject,
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

    /// True when the check stored a new SAS token in the datastore.
    fn reminted(&self) -> bool {
        self.outcome == Some(Outcome::Updated) && self.action == Some(Action::UpdateSas)
    }

    fn apply(self, entry: &mut Entry) {
        // A credential storage refused is one a person must replace (keysync had no better one
        // to write). An unreachable or inconclusive check says nothing about the credential:
        // it is logged as a warning, but nobody has to act on it.
        let refused = self
            .verification
            .as_ref()
            .is_some_and(|v| v.outcome == VerifyOutcome::Rejected);
        entry.attention = self.attention.unwrap_or(entry.attention) || refused;
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
    async fn run(&self, job: Job) -> (Job, Finding) {
        let subject = &job.subject;
        let finding = match &subject.stored {
            Stored::SasToken => self.sas(subject).await,
            key => self.account_key(subject, key).await,
        };
        if let Some(v) = &finding.verification {
            tracing::debug!(
                datastore = subject.id.name(),
                verification = %v.outcome,
                code = v.code.as_deref().unwrap_or("-"),
                "storage check"
            );
        }
        (job, finding)
    }

    async fn account_key(&self, subject: &Subject, stored: &Stored) -> Finding {
        let used = CredentialUsed::AccountKey;
        let target = match self.target(&subject.datastore) {
            Ok(target) => target,
            Err(reason) => return not_checked(used, reason),
        };
        let secret = match stored {
            Stored::Key(slot) => self.run.keys.get(*slot),
            Stored::OldKey(secret) => secret,
            Stored::UnknownKey(why) => return not_checked(used, why.to_string()),
            Stored::SasToken => return Finding::default(),
        };
        let key = match self.account_key_of(secret) {
            Ok(key) => key,
            Err(reason) => return not_checked(used, reason),
        };
        let credential = Credential::Key(&key);
        Finding::checked(self.checker().check(&target, credential, &self.dead).await)
    }

    async fn stored_token(&self, id: &DatastoreId) -> Result<SecretString, String> {
        let missing = || "no SAS token is stored".to_string();
        match self.arm.list_datastore_secrets(id).await {
            Ok(secrets) => secrets.sas_token.ok_or_else(missing),
            Err(e) if e.is_not_found() => Err(missing()),
            Err(e) => Err(format!("could not read the token: {}", reported(&e))),
        }
    }

    fn account_key_of(&self, secret: &SecretString) -> Result<AccountKey, String> {
        AccountKey::new(&self.run.account.name, secret)
            .map_err(|_| "the stored key is not base64, so no storage account accepts it".into())
    }

    async fn sas(&self, subject: &Subject) -> Finding {
        let used = CredentialUsed::Sas;
        let unchecked = |reason: String| Finding {
            reason: Some("SAS token: could not be checked against storage".into()),
            ..not_checked(used, reason)
        };
        let target = match self.target(&subject.datastore) {
            Ok(target) => target,
            Err(reason) => return unchecked(reason),
        };
        let token = match self.stored_token(&subject.id).await {
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
            VerifyOutcome::Rejected => {
                self.dead_sas(&subject.id, &target, parsed, verification)
                    .await
            }
            _ => Finding {
                reason: Some("SAS token: could not be checked against storage".into()),
                ..Finding::checked(verification)
            },
        }
    }

    /// A token storage rejected: re-mint it when allowed and possible, else say why not.
    async fn dead_sas(
        &self,
        id: &DatastoreId,
        target: &Target,
        parsed: Result<SasToken, SasError>,
        rejected: Verification,
    ) -> Finding {
        let code = rejected.code.clone().unwrap_or_else(|| "rejected".into());
        let minted = parsed
            .map_err(|e| format!("SAS token rejected by storage ({code}); not re-minted: {e}"))
            .and_then(|old| Ok((self.remint(&old, target, &code)?, old)));
        match minted {
            Ok((token, old)) => self.replace_token(id, &old, &token, &code).await,
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

    /// Stores the re-minted token in place and checks it where the datastore now points.
    async fn replace_token(
        &self,
        id: &DatastoreId,
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
        // Someone may have stored a working token since keysync read this one: read it again
        // just before the write, so that keysync never replaces a token it did not check.
        match self.stored_token(id).await {
            Ok(now) if still_the_token(&now, old) => {}
            Ok(_) => {
                return Finding {
                    outcome: Some(Outcome::Skipped),
                    action: Some(Action::Skip),
                    reason: Some(format!(
                        "SAS token rejected by storage ({code}), then replaced by someone else before keysync could re-mint it: left alone"
                    )),
                    ..Finding::default()
                };
            }
            Err(reason) => {
                return failed(format!(
                    "SAS token rejected by storage ({code}); not re-minted: {reason}"
                ));
            }
        }
        let stored = match self.store_token(id, token).await {
            Ok(stored) => stored,
            Err(reason) => {
                return failed(format!(
                    "SAS token rejected by storage ({code}); storing a re-minted one failed: {reason}"
                ));
            }
        };
        tracing::info!(
            datastore = id.name(),
            key = %self.run.target,
            outcome = "reminted",
            "SAS token"
        );
        let verification = match self.target(&stored) {
            Ok(target) => {
                self.checker()
                    .check(&target, Credential::Sas(token), &self.dead)
                    .await
            }
            Err(reason) => {
                Verification::new(VerifyOutcome::NotChecked, CredentialUsed::Sas, reason)
            }
        };
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

    /// Stores `token` in place (see [`execute::store_sas_token`]); returns the datastore as
    /// stored, or why not in the report's words (without Azure's message, which is logged).
    async fn store_token(
        &self,
        id: &DatastoreId,
        token: &SecretString,
    ) -> Result<Datastore, String> {
        execute::store_sas_token(&self.arm, id, self.run.facts, token)
            .await
            .map_err(execute::explain_update)
    }

    /// The container or share a datastore names, under the account's endpoint for it.
    fn target(&self, datastore: &Datastore) -> Result<Target, String> {
        let (service, name) = match SignedResource::of(datastore)? {
            SignedResource::Container(name) => (Service::Blob, name),
            SignedResource::Share(name) => (Service::File, name),
        };
        let endpoints = self.run.account.properties.primary_endpoints.as_ref();
        let (endpoint, service_name) = match service {
            Service::Blob => (endpoints.and_then(|e| e.blob.as_deref()), "blob"),
            Service::File => (endpoints.and_then(|e| e.file.as_deref()), "file"),
        };
        let endpoint =
            endpoint.ok_or_else(|| format!("the account lists no {service_name} endpoint"))?;
        let endpoint = url::Url::parse(endpoint)
            .map_err(|_| format!("the account's {service_name} endpoint is not a URL"))?;
        // An emulator's scenario may name Azure's own endpoints (`<name>.blob.core.windows.net`):
        // a signed request there would reach whoever owns that name in Azure.
        if is_loopback(&self.arm.options().endpoint) && !is_loopback(&endpoint) {
            return Err(format!(
                "ARM is a local emulator and the account's {service_name} endpoint is not on this machine, so no signed request is sent there"
            ));
        }
        Ok(Target {
            service,
            endpoint,
            name: name.to_string(),
        })
    }

    fn checker(&self) -> &Checker {
        &self.checker
    }
}

/// True when `stored` is still the token `old` was read from (the same signature).
fn still_the_token(stored: &SecretString, old: &SasToken) -> bool {
    SasToken::parse(stored.expose_secret())
        .is_ok_and(|now| now.get("sig").is_some() && now.get("sig") == old.get("sig"))
}

fn not_checked(used: CredentialUsed, detail: String) -> Finding {
    Finding::checked(Verification::new(VerifyOutcome::NotChecked, used, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_still_the_one_read_only_while_its_signature_is() {
        let read =
            SasToken::parse("sv=2024-11-04&ss=b&srt=co&sp=rl&se=2030-01-31&sig=b2xk").unwrap();
        let same = SecretString::from("sp=rl&sv=2024-11-04&ss=b&srt=co&se=2030-01-31&sig=b2xk");
        let replaced = SecretString::from("sv=2024-11-04&ss=b&srt=co&sp=rl&se=2031-01-31&sig=bmV3");
        assert!(still_the_token(&same, &read));
        assert!(!still_the_token(&replaced, &read));
        assert!(!still_the_token(&SecretString::from("not a token"), &read));
    }
}
