//! How much of the memory budget is in use: read by the backpressure
//! controller (its memory factor) and the memory monitor.

/// A memory budget's occupancy. Infallible reads of counters.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait MemoryGaugePort: Send + Sync + 'static {
    /// Bytes granted right now.
    fn in_use(&self) -> u64;
    /// The budget.
    fn total(&self) -> u64;
}
