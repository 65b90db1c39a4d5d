//! The emulator's clock: it starts at the scenario's `now` and runs with real time, so that two
//! regenerations a moment apart still get different `keyCreationTime`s. Tests move it with
//! `POST /_emulator/clock`. Token lifetimes do not use it: a client checks `expires_on` against
//! the real time, so tokens expire on the real clock.

use std::time::Instant;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Azure's timestamp shape: UTC, seven fractional digits (`2021-03-18T04:42:22.4322836Z`).
const AZURE_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");

/// A clock that can be set and moved while it keeps running.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    base: OffsetDateTime,
    since: Instant,
}

impl Clock {
    /// A clock that reads `start` now.
    pub(crate) fn starting_at(start: OffsetDateTime) -> Self {
        Clock {
            base: start,
            since: Instant::now(),
        }
    }

    /// The emulator's current time.
    pub(crate) fn now(&self) -> OffsetDateTime {
        let elapsed = Duration::try_from(self.since.elapsed()).unwrap_or(Duration::ZERO);
        self.base.saturating_add(elapsed)
    }

    /// Moves the clock by `seconds` (negative moves it back).
    pub(crate) fn advance(&mut self, seconds: i64) {
        let now = self.now();
        *self = Clock::starting_at(now.saturating_add(Duration::seconds(seconds)));
    }

    /// Makes the clock read `now` from this moment on.
    pub(crate) fn set(&mut self, now: OffsetDateTime) {
        *self = Clock::starting_at(now);
    }
}

/// Formats a time the way ARM does.
pub(crate) fn azure_time(at: OffsetDateTime) -> String {
    // Formatting with a fixed description of plain numeric fields cannot fail; the fallback
    // keeps the emulator answering rather than panicking if that ever changes.
    at.to_offset(UtcOffset::UTC)
        .format(AZURE_TIME)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_with_seven_fractional_digits_in_utc() {
        let at = datetime!(2026-08-01 02:00:00.5 +02:00);
        assert_eq!(azure_time(at), "2026-08-01T00:00:00.5000000Z");
    }

    #[test]
    fn runs_from_its_start_and_can_be_moved() {
        let start = datetime!(2026-11-20 09:00 UTC);
        let mut clock = Clock::starting_at(start);
        assert!(clock.now() >= start);
        assert!(clock.now() - start < Duration::seconds(5));

        clock.advance(86_400);
        assert!(clock.now() >= start + Duration::days(1));
        clock.set(start);
        assert!(clock.now() < start + Duration::days(1));
    }
}
