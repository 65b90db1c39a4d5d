//! Fault injection: rules that make chosen ARM operations throttle, fail, conflict, lose their
//! connection or slow down, so that a client's retry and error handling can be tested. A rule
//! fires for the first `count` matching requests, or for a `rate` fraction of them decided by a
//! seeded generator, so a test run is reproducible for a given request order.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::reply::Reply;

/// What a fault rule does to a request it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// `429 TooManyRequests` with `Retry-After`.
    Throttle,
    /// The rule's `status` (default 500), as an ARM JSON error or, with `html`, a gateway page.
    Error,
    /// `409 Conflict`: another operation is in progress.
    Conflict,
    /// The connection is closed without an answer, and the request changed nothing.
    Drop,
    /// The request is carried out (a write is made, an event sent), then the connection is
    /// closed without the answer: the client cannot tell it from `drop`.
    LoseAnswer,
    /// The request waits `delayMs`, then is served normally.
    Delay,
}

/// How `Retry-After` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfterFormat {
    /// A number of seconds.
    #[default]
    Seconds,
    /// An HTTP date that many seconds ahead.
    HttpDate,
}

/// One fault rule, as written in a scenario or posted to `/_emulator/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// The operationId the rule applies to (case-insensitive), or `*` for every ARM operation.
    pub operation: String,
    /// What the rule does.
    pub kind: FaultKind,
    /// The status of an `error` (default 500), `throttle` (429) or `conflict` (409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For `error`: answer with an HTML page instead of ARM JSON.
    #[serde(default)]
    pub html: bool,
    /// Whether and how to send `Retry-After`; `throttle` always sends it (in seconds by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfterFormat>,
    /// The wait `Retry-After` asks for.
    #[serde(default = "one_second")]
    pub retry_after_seconds: u64,
    /// For `delay`: how long to wait.
    #[serde(default)]
    pub delay_ms: u64,
    /// Let this many matching requests through before the rule starts firing (such as the
    /// first page of a listing, to fail the second).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u32,
    /// Fire for at most this many requests, then stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Fire for this fraction of matching requests (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Seed of the generator that applies `rate`.
    #[serde(default)]
    pub seed: u64,
    /// For `Workspaces_ResyncKeys`: fire only while another resync of the same workspace is
    /// still running.
    #[serde(default)]
    pub while_running: bool,
}

/// The longest `Retry-After` a rule may ask for, in seconds.
const MAX_RETRY_AFTER_SECONDS: u64 = 86_400;
/// The longest `delay` a rule may add, in milliseconds.
const MAX_DELAY_MS: u64 = 3_600_000;

fn one_second() -> u64 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl FaultRule {
    /// A rule of `kind` on `operation` that fires on every matching request.
    pub fn new(operation: &str, kind: FaultKind) -> Self {
        FaultRule {
            operation: operation.to_string(),
            kind,
            status: None,
            html: false,
            retry_after: None,
            retry_after_seconds: one_second(),
            delay_ms: 0,
            skip: 0,
            count: None,
            rate: None,
            seed: 0,
            while_running: false,
        }
    }

    /// Checks the values a rule can get wrong; the message names the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.operation.trim().is_empty() {
            return Err("operation must be an operationId or \"*\"".into());
        }
        if let Some(rate) = self.rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(format!("rate {rate} is not between 0 and 1"));
        }
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(format!("status {status} is not an error status (400-599)"));
        }
        // An HTTP date is written for now plus this wait, so it must stay a date httpdate can
        // write; a day is more than any test or benchmark asks for.
        if self.retry_after_seconds > MAX_RETRY_AFTER_SECONDS {
            return Err(format!(
                "retryAfterSeconds {} is over {MAX_RETRY_AFTER_SECONDS} (a day)",
                self.retry_after_seconds
            ));
        }
        if self.delay_ms > MAX_DELAY_MS {
            return Err(format!(
                "delayMs {} is over {MAX_DELAY_MS} (an hour)",
                self.delay_ms
            ));
        }
        Ok(())
    }

    fn matches(&self, operation: &str) -> bool {
        self.operation == "*" || self.operation.eq_ignore_ascii_case(operation)
    }
}

/// What the fault rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// Time to wait before answering (from `delay` rules).
    pub delay: Duration,
    /// The reply that replaces the real answer, if a failing rule fired.
    pub failure: Option<Reply>,
    /// Carry the request out, then close the connection instead of answering.
    pub lose_answer: bool,
}

/// The active rules with their counters and generators.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    rules: Vec<ActiveRule>,
}

#[derive(Debug)]
struct ActiveRule {
    rule: FaultRule,
    /// Matching requests let through unharmed so far under `skip`.
    skipped: u32,
    fired: u32,
    rng: StdRng,
}

impl ActiveRule {
    fn fires(&mut self) -> bool {
        if self.skipped < self.rule.skip {
            self.skipped += 1;
            return false;
        }
        if self.rule.count.is_some_and(|count| self.fired >= count) {
            return false;
        }
        let fires = match self.rule.rate {
            Some(rate) => self.rng.random::<f64>() < rate,
            None => true,
        };
        if fires {
            self.fired += 1;
        }
        fires
    }
}

impl FaultEngine {
    /// Replaces every rule (and resets counters and generators).
    pub(crate) fn new(rules: Vec<FaultRule>) -> Self {
        let rules = rules
            .into_iter()
            .map(|rule| ActiveRule {
                rng: StdRng::seed_from_u64(rule.seed),
                rule,
                skipped: 0,
                fired: 0,
            })
            .collect();
        FaultEngine { rules }
    }

    pub(crate) fn rules(&self) -> Vec<FaultRule> {
        self.rules
            .iter()
            .map(|active| active.rule.clone())
            .collect()
    }

    /// Runs the rules in order for a request to `operation`. Delays add up; the first failing
    /// rule that fires decides the answer and later rules are not consulted. `busy` tells
    /// whether the resource already has an operation running (for `whileRunning` rules).
    pub(crate) fn decide(&mut self, operation: &str, busy: bool) -> Decision {
        let mut decision = Decision::default();
        for active in &mut self.rules {
            if !active.rule.matches(operation) || (active.rule.while_running && !busy) {
                continue;
            }
            if !active.fires() {
                continue;
            }
            match active.rule.kind {
                FaultKind::Delay => {
                    decision.delay += Duration::from_millis(active.rule.delay_ms);
                    continue;
                }
                FaultKind::LoseAnswer => {
                    decision.lose_answer = true;
                    break;
                }
                _ => {}
            }
            decision.failure = Some(failure_reply(&active.rule));
            break;
        }
        decision
    }
}

fn failure_reply(rule: &FaultRule) -> Reply {
    match rule.kind {
        FaultKind::Throttle => throttle(rule),
        FaultKind::Error => server_error(rule),
        FaultKind::Conflict => Reply::error(
            status_or(rule.status, StatusCode::CONFLICT),
            "Conflict",
            "The request conflicts with another operation that is in progress on this \
             resource. Retry after it has completed.",
        ),
        FaultKind::Drop => Reply::dropped(),
        // Delays and lost answers never reach here; answering normally is the right reading.
        FaultKind::Delay | FaultKind::LoseAnswer => Reply::empty(StatusCode::OK),
    }
}

fn throttle(rule: &FaultRule) -> Reply {
    let reply = Reply::error(
        status_or(rule.status, StatusCode::TOO_MANY_REQUESTS),
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation type - \
         Read_ObservationWindow_00:05:00. For more information, refer to - \
         https://aka.ms/srpthrottlinglimits",
    );
    with_retry_after(reply, rule.retry_after.unwrap_or_default(), rule)
}

fn server_error(rule: &FaultRule) -> Reply {
    let status = status_or(rule.status, StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let reply = if rule.html {
        Reply::html(status, gateway_page(status.as_u16(), reason))
    } else {
        let code = reason.replace(' ', "");
        Reply::error(
            status,
            &code,
            "The server encountered an error while processing the request. Please retry.",
        )
    };
    match rule.retry_after {
        Some(format) => with_retry_after(reply, format, rule),
        None => reply,
    }
}

fn with_retry_after(reply: Reply, format: RetryAfterFormat, rule: &FaultRule) -> Reply {
    let value = match format {
        RetryAfterFormat::Seconds => rule.retry_after_seconds.to_string(),
        RetryAfterFormat::HttpDate => httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(rule.retry_after_seconds),
        ),
    };
    reply.header(RETRY_AFTER, value)
}

fn status_or(status: Option<u16>, default: StatusCode) -> StatusCode {
    status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default)
}

fn gateway_page(status: u16, reason: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>\
         <body><h1>{status} {reason}</h1><p>The service is temporarily unavailable. \
         Please try again later.</p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(engine: &mut FaultEngine, operation: &str, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| {
                engine
                    .decide(operation, false)
                    .failure
                    .map_or(200, |r| r.logged_status())
            })
            .collect()
    }

    #[test]
    fn a_counted_rule_fails_the_first_requests_then_stops() {
        let rule = FaultRule {
            count: Some(2),
            ..FaultRule::new("StorageAccounts_ListKeys", FaultKind::Throttle)
        };
        let mut engine = FaultEngine::new(vec![rule]);
        assert_eq!(outcomes(&mut engine, "Workspaces_Get", 1), vec![200]);
        assert_eq!(
            outcomes(&mut engine, "storageaccounts_listkeys", 3),
            vec![429, 429, 200]
        );
    }

    #[test]
    fn a_rate_rule_is_reproducible_for_a_seed() {
        let rule = FaultRule {
            rate: Some(0.3),
            seed: 42,
            ..FaultRule::new("*", FaultKind::Error)
        };
        let first = outcomes(&mut FaultEngine::new(vec![rule.clone()]), "X", 200);
        let second = outcomes(&mut FaultEngine::new(vec![rule]), "X", 200);
        assert_eq!(first, second);
        let failed = first.iter().filter(|s| **s == 500).count();
        assert!((30..=90).contains(&failed), "{failed} of 200 failed");
    }

    #[test]
    fn delays_add_up_and_the_first_failure_wins() {
        let delay = FaultRule {
            delay_ms: 30,
            ..FaultRule::new("*", FaultKind::Delay)
        };
        let conflict = FaultRule::new("*", FaultKind::Conflict);
        let drop = FaultRule::new("*", FaultKind::Drop);
        let mut engine = FaultEngine::new(vec![delay, conflict, drop]);
        let decision = engine.decide("Workspaces_ResyncKeys", false);
        assert_eq!(decision.delay, Duration::from_millis(30));
        assert_eq!(decision.failure.map(|r| r.logged_status()), Some(409));
    }

    #[test]
    fn a_while_running_rule_only_fires_on_a_busy_resource() {
        let rule = FaultRule {
            while_running: true,
            ..FaultRule::new("Workspaces_ResyncKeys", FaultKind::Conflict)
        };
        let mut engine = FaultEngine::new(vec![rule]);
        assert!(
            engine
                .decide("Workspaces_ResyncKeys", false)
                .failure
                .is_none()
        );
        assert!(
            engine
                .decide("Workspaces_ResyncKeys", true)
                .failure
                .is_some()
        );
    }

    #[test]
    fn throttling_says_when_to_come_back() {
        let rule = FaultRule {
            retry_after: Some(RetryAfterFormat::HttpDate),
            retry_after_seconds: 5,
            ..FaultRule::new("*", FaultKind::Throttle)
        };
        let reply = failure_reply(&rule);
        let date = reply.header_value("retry-after").unwrap();
        assert!(httpdate::parse_http_date(date).unwrap() > SystemTime::now());
        let body = reply.json_body().unwrap();
        assert_eq!(body["error"]["code"], "TooManyRequests");

        let seconds = failure_reply(&FaultRule::new("*", FaultKind::Throttle));
        assert_eq!(seconds.header_value("retry-after"), Some("1"));
    }

    #[test]
    fn an_html_error_is_a_gateway_page() {
        let rule = FaultRule {
            status: Some(502),
            html: true,
            ..FaultRule::new("*", FaultKind::Error)
        };
        let reply = failure_reply(&rule);
        assert_eq!(reply.status(), StatusCode::BAD_GATEWAY);
        assert!(reply.json_body().is_none());
    }

    #[test]
    fn rules_with_impossible_values_are_refused() {
        let bad_rate = FaultRule {
            rate: Some(1.5),
            ..FaultRule::new("*", FaultKind::Error)
        };
        assert!(bad_rate.validate().unwrap_err().contains("rate"));
        let bad_status = FaultRule {
            status: Some(200),
            ..FaultRule::new("*", FaultKind::Error)
        };
        assert!(bad_status.validate().is_err());
        let far = FaultRule {
            retry_after: Some(RetryAfterFormat::HttpDate),
            retry_after_seconds: u64::MAX,
            ..FaultRule::new("*", FaultKind::Throttle)
        };
        assert_eq!(
            far.validate().unwrap_err(),
            format!("retryAfterSeconds {} is over 86400 (a day)", u64::MAX)
        );
    }
}
