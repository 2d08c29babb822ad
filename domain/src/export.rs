//! Exports started at a provider: a job that does not list its files asks a
//! provider to prepare them (POST to a start URL), then polls a status URL
//! with backoff until the provider answers with a manifest (the files) or
//! a failure, or the deadline passes. The wire protocol is in
//! `docs/export-provider.md`; this module holds its validated pieces.

use std::time::Duration;

use thiserror::Error;

use crate::source::SourceUrl;

/// How often and for how long to poll a provider: the first wait is
/// `base_interval`, each next one doubles up to `max_interval`, and the
/// export fails once `deadline` has passed since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    base_interval: Duration,
    max_interval: Duration,
    deadline: Duration,
}

/// Why poll settings are not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidPollPolicy {
    #[error("base_interval_ms must be at least 1")]
    ZeroBase,
    #[error("max_interval_ms ({max} ms) must be at least base_interval_ms ({base} ms)")]
    MaxBelowBase { base: u128, max: u128 },
    #[error("deadline_ms must be at least base_interval_ms ({base} ms)")]
    DeadlineBelowBase { base: u128 },
    #[error("deadline_ms is more than the 7 days allowed")]
    DeadlineTooLong,
}

impl PollPolicy {
    /// Longest deadline accepted.
    pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

    pub fn new(
        base_interval: Duration,
        max_interval: Duration,
        deadline: Duration,
    ) -> Result<Self, InvalidPollPolicy> {
        if base_interval.is_zero() {
            return Err(InvalidPollPolicy::ZeroBase);
        }
        if max_interval < base_interval {
            return Err(InvalidPollPolicy::MaxBelowBase {
                base: base_interval.as_millis(),
                max: max_interval.as_millis(),
            });
        }
        if deadline < base_interval {
            return Err(InvalidPollPolicy::DeadlineBelowBase {
                base: base_interval.as_millis(),
            });
        }
        if deadline > Self::MAX_DEADLINE {
            return Err(InvalidPollPolicy::DeadlineTooLong);
        }
        Ok(Self {
            base_interval,
            max_interval,
            deadline,
        })
    }

    pub fn base_interval(&self) -> Duration {
        self.base_interval
    }
    pub fn max_interval(&self) -> Duration {
        self.max_interval
    }
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The wait before poll number `poll` (0-based): base * 2^poll, capped.
    pub fn interval(&self, poll: u32) -> Duration {
        crate::retry::exponential(self.base_interval, self.max_interval, poll)
    }
}

impl Default for PollPolicy {
    /// 2 s, doubling up to 60 s, for at most 1 hour.
    fn default() -> Self {
        Self {
            base_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(60),
            deadline: Duration::from_secs(3600),
        }
    }
}

/// What the job asks a provider to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    /// Where the export is started (POST).
    pub start_url: SourceUrl,
    /// The JSON document sent as the POST body (already checked to be JSON).
    pub request_body: Option<String>,
    pub poll: PollPolicy,
}

/// How far an export got; stored with the job so a restart continues
/// polling instead of starting a second export.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExportProgress {
    /// Where the provider said to poll (known once the start succeeded).
    pub status_url: Option<SourceUrl>,
    /// Unix milliseconds at which the export was started (deadline origin).
    pub started_at_ms: Option<i64>,
}

/// The export part of a job: what was asked and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub spec: ExportSpec,
    pub progress: ExportProgress,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn intervals_double_from_base_up_to_max() {
        let p = PollPolicy::new(ms(100), ms(1000), ms(10_000)).unwrap();
        let waits: Vec<u128> = (0..7).map(|i| p.interval(i).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(p.interval(u32::MAX), ms(1000));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert_eq!(
            PollPolicy::new(ms(0), ms(10), ms(100)),
            Err(InvalidPollPolicy::ZeroBase)
        );
        assert!(matches!(
            PollPolicy::new(ms(100), ms(10), ms(1000)),
            Err(InvalidPollPolicy::MaxBelowBase { .. })
        ));
        assert!(matches!(
            PollPolicy::new(ms(100), ms(100), ms(10)),
            Err(InvalidPollPolicy::DeadlineBelowBase { .. })
        ));
        assert_eq!(
            PollPolicy::new(ms(1), ms(1), PollPolicy::MAX_DEADLINE + ms(1)),
            Err(InvalidPollPolicy::DeadlineTooLong)
        );
        let d = PollPolicy::default();
        assert_eq!(
            PollPolicy::new(d.base_interval(), d.max_interval(), d.deadline()),
            Ok(d)
        );
    }
}
