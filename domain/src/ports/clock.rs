//! Wall-clock time for records (`created_at_ms`, event `at_ms`, export
//! deadlines): `Clock`, so use cases can be tested at a fixed time.
//! Durations and sleeps use the runtime's monotonic timer instead.

/// The current wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}
