//! The one retry policy: which failures are retried, how long to wait
//! (exponential backoff with full jitter, `Retry-After` honoured), how many
//! tries and until when; the one jitter source; and the one rule for which
//! HTTP statuses are transient, used by every adapter that speaks HTTP.
//!
//! Retries happen in one place per operation: adapters may retry a request
//! *before* its body starts (with this policy) and then mark what they gave
//! up on as exhausted (`exhausted()` on their errors), so the application's
//! retry loop (`Transfer`) never stacks another loop on top of theirs.

use std::time::Duration;

use crate::error::ErrorClass;

/// Whether an HTTP status says "the same request may succeed later":
/// 408 Request Timeout, 425 Too Early, 429 Too Many Requests and every
/// 5xx. The one table: the source client, the export provider client, the
/// webhook and the S3 error mapping all ask it.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500..=599)
}

/// The class of an HTTP error status: transient per
/// [`is_transient_status`], else a client error.
pub fn class_of_status(status: u16) -> ErrorClass {
    if is_transient_status(status) {
        ErrorClass::Transient
    } else {
        ErrorClass::Client
    }
}

/// The one backoff formula: `base × 2^n`, capped at `max`. Retries draw
/// their delay under it (full jitter); export polls wait exactly it.
pub fn exponential(base: Duration, max: Duration, n: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(n.min(31))).min(max)
}

/// A uniform number in [0, 1) for retry jitter: the one source every retry
/// loop draws from (tests pass their own unit to [`RetryPolicy::delay`]).
pub fn jitter() -> f64 {
    rand::random::<f64>()
}

/// How failures of one class are retried: exponential backoff with full
/// jitter (`delay = random(0, min(max, base × 2^attempt))`), at most
/// `attempts` tries in all, never past `deadline` from the first try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            deadline: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` after a failure of `class`:
    /// transient failures back off (full jitter); a source that changed
    /// during the copy is retried at once, from zero, under the same cap and
    /// deadline; client, storage, cancelled and internal failures are never
    /// retried.
    pub fn delay_for(
        &self,
        class: ErrorClass,
        retry: u32,
        unit: f64,
        elapsed: Duration,
    ) -> Option<Duration> {
        match class {
            ErrorClass::Transient => self.delay(retry, unit, elapsed),
            ErrorClass::SourceChanged => self.delay(retry, 0.0, elapsed),
            ErrorClass::Client
            | ErrorClass::Storage
            | ErrorClass::Cancelled
            | ErrorClass::Internal => None,
        }
    }

    /// The delay before retry number `retry` (0 = the first retry), given a
    /// uniform random `unit` in [0, 1); `None` when no retry is left, because
    /// of the attempt cap or because the delay would end past the deadline
    /// (`elapsed` is the time since the first try).
    pub fn delay(&self, retry: u32, unit: f64, elapsed: Duration) -> Option<Duration> {
        if retry.saturating_add(1) >= self.attempts {
            return None;
        }
        let delay = exponential(self.base, self.max, retry).mul_f64(unit.clamp(0.0, 1.0));
        (elapsed.saturating_add(delay) < self.deadline).then_some(delay)
    }
}

impl RetryPolicy {
    /// A policy of `attempts` tries in all with this policy's delays.
    #[must_use]
    pub fn with_attempts(self, attempts: u32) -> Self {
        Self {
            attempts: attempts.max(1),
            ..self
        }
    }

    /// Retries after the first try: `attempts - 1`.
    pub fn retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }

    /// The delay before retry number `retry` when the other side asked for
    /// `retry_after` (HTTP `Retry-After`): the longer of the two, never past
    /// `max`; `None` as for [`RetryPolicy::delay`].
    pub fn delay_honouring(
        &self,
        retry: u32,
        unit: f64,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let delay = self.delay(retry, unit, elapsed)?;
        let delay = match retry_after {
            Some(asked) => delay.max(asked.min(self.max)),
            None => delay,
        };
        (elapsed.saturating_add(delay) < self.deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_use_full_jitter_under_a_cap_and_deadline() {
        let policy = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
            deadline: Duration::from_secs(10),
        };
        let zero = Duration::ZERO;
        // Ceilings 100, 200, 300 (capped) ms; the unit scales within them.
        assert_eq!(policy.delay(0, 0.5, zero), Some(Duration::from_millis(50)));
        assert_eq!(
            policy.delay(1, 0.999, zero).map(|d| d.as_millis()),
            Some(199)
        );
        assert_eq!(policy.delay(2, 1.0, zero), Some(Duration::from_millis(300)));
        assert_eq!(policy.delay(0, 0.0, zero), Some(Duration::ZERO));
        // Four attempts in all: three retries.
        assert_eq!(policy.delay(3, 0.5, zero), None);
        // The deadline wins over the attempt cap.
        assert_eq!(policy.delay(0, 0.5, Duration::from_millis(9_990)), None);
        assert!(policy.delay(0, 0.5, Duration::from_millis(9_900)).is_some());
    }

    #[test]
    fn retries_depend_on_the_error_class() {
        use crate::ErrorClass as C;
        let policy = RetryPolicy::default();
        let zero = Duration::ZERO;
        assert_eq!(
            policy.delay_for(C::Transient, 0, 0.5, zero),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            policy.delay_for(C::SourceChanged, 0, 0.5, zero),
            Some(Duration::ZERO)
        );
        for class in [C::Client, C::Storage, C::Cancelled, C::Internal] {
            assert_eq!(policy.delay_for(class, 0, 0.5, zero), None, "{class}");
        }
        // The cap applies to every class.
        assert_eq!(policy.delay_for(C::SourceChanged, 4, 0.5, zero), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        };
        let zero = Duration::ZERO;
        assert_eq!(
            policy.delay_honouring(0, 0.5, zero, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.delay_honouring(0, 0.5, zero, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.delay_honouring(0, 0.5, zero, None),
            Some(Duration::from_millis(50))
        );
        assert_eq!(policy.delay_honouring(2, 0.5, zero, None), None);
        assert_eq!(policy.with_attempts(0).attempts, 1);
        assert_eq!(policy.retries(), 2);
    }

    #[test]
    fn one_table_of_transient_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(is_transient_status(s), "{s}");
            assert_eq!(class_of_status(s), ErrorClass::Transient);
        }
        for s in [400, 401, 403, 404, 409, 412, 416, 301, 200] {
            assert!(!is_transient_status(s), "{s}");
            assert_eq!(class_of_status(s), ErrorClass::Client);
        }
    }

    #[test]
    fn jitter_is_a_unit() {
        for _ in 0..100 {
            let u = jitter();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
