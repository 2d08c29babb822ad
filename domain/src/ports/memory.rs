//! The memory budget for buffers that hold file bytes, as the application
//! sees it: how much is in use (the backpressure controller's memory factor,
//! the memory monitor) and a reservation taken before a chunk is read.

use async_trait::async_trait;

/// A memory budget's occupancy. Infallible reads of counters.
pub trait MemoryGaugePort: Send + Sync + 'static {
    /// Bytes granted right now.
    fn in_use(&self) -> u64;
    /// The budget.
    fn total(&self) -> u64;
}

/// Bytes taken from a budget; given back when dropped.
pub struct MemoryReservation {
    bytes: u64,
    _held: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for MemoryReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReservation")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl MemoryReservation {
    /// `held` releases the bytes when dropped (e.g. a semaphore permit).
    pub fn new(bytes: u64, held: impl Send + Sync + 'static) -> Self {
        Self {
            bytes,
            _held: Box::new(held),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Where read chunks take their memory from. A reservation larger than the
/// budget is clamped to the whole budget, so it always succeeds eventually.
#[async_trait]
pub trait MemoryBudgetPort: MemoryGaugePort + std::fmt::Debug {
    /// Waits until `bytes` are free and takes them.
    async fn reserve(&self, bytes: u64) -> MemoryReservation;
}
