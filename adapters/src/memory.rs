//! The process-wide memory budget for buffers that hold file bytes.
//!
//! A buffer is taken from the budget before it is filled and given back when
//! its grant is dropped (RAII). A transfer that cannot get its buffer waits,
//! so backpressure travels to its source instead of memory growing. Built on
//! tokio's semaphore (permits are KiB), not a hand-rolled allocator.

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: u64 = 1024;

/// A share of memory for buffers.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
    total_units: u32,
}

/// Bytes taken from the budget; returned when dropped.
#[derive(Debug)]
pub struct MemoryGrant {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
}

impl MemoryGrant {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// A request the budget can never satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "a {asked}-byte buffer cannot fit in the {total}-byte memory budget; raise --memory-budget or lower --part-size"
)]
pub struct BudgetTooSmall {
    pub asked: u64,
    pub total: u64,
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded up to whole KiB; at most 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_units = u32::try_from(units(bytes)).unwrap_or(u32::MAX).max(1);
        Self {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    pub fn total(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Bytes not granted right now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    /// Bytes granted right now.
    pub fn in_use(&self) -> u64 {
        self.total() - self.available()
    }

    /// Takes `bytes`, waiting until they are free.
    pub async fn acquire(&self, bytes: u64) -> Result<MemoryGrant, BudgetTooSmall> {
        let needed = units(bytes).max(1);
        let too_small = BudgetTooSmall {
            asked: bytes,
            total: self.total(),
        };
        let n = u32::try_from(needed).map_err(|_| too_small)?;
        if n > self.total_units {
            return Err(too_small);
        }
        let permit = self
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| too_small)?;
        Ok(MemoryGrant {
            _permit: permit,
            bytes,
        })
    }
}

/// The process's resident set size, from `/proc/self/status` (`None` where
/// there is no procfs).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// How close memory is to its ceiling (alerts at 60, 75 and 85 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryAlert {
    Normal,
    /// 60 % of the ceiling.
    Warning,
    /// 75 %.
    Critical,
    /// 85 %.
    Emergency,
}

impl MemoryAlert {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryAlert::Normal => "normal",
            MemoryAlert::Warning => "warning",
            MemoryAlert::Critical => "critical",
            MemoryAlert::Emergency => "emergency",
        }
    }

    fn for_ratio(percent: u64) -> Self {
        match percent {
            0..60 => MemoryAlert::Normal,
            60..75 => MemoryAlert::Warning,
            75..85 => MemoryAlert::Critical,
            _ => MemoryAlert::Emergency,
        }
    }
}

/// Tracks RSS against a ceiling and says when the alert level changes
/// (rising at once, falling 5 points below a threshold, so a sample that
/// hovers does not log on every tick).
#[derive(Debug, Clone)]
pub struct MemoryAlarm {
    ceiling: u64,
    level: MemoryAlert,
}

impl MemoryAlarm {
    pub fn new(ceiling: u64) -> Self {
        Self {
            ceiling: ceiling.max(1),
            level: MemoryAlert::Normal,
        }
    }

    pub fn level(&self) -> MemoryAlert {
        self.level
    }

    /// Takes a sample; returns the new level when it changed.
    pub fn sample(&mut self, rss: u64) -> Option<MemoryAlert> {
        let percent = rss.saturating_mul(100) / self.ceiling;
        let raw = MemoryAlert::for_ratio(percent);
        let next = if raw > self.level {
            raw
        } else if raw < self.level && MemoryAlert::for_ratio(percent + 5) < self.level {
            MemoryAlert::for_ratio(percent + 5)
        } else {
            self.level
        };
        (next != self.level).then(|| {
            self.level = next;
            next
        })
    }
}

/// The process's memory budget split in two pools, so that waiting can
/// never deadlock: read chunks (taken before a chunk is read, returned once
/// it is written) and buffered S3 parts (taken when a part starts filling,
/// returned once it is uploaded). A transfer may hold a chunk while it waits
/// for a part, but a part holder never waits for memory, so parts always
/// drain and chunk holders always progress.
#[derive(Debug, Clone)]
pub struct MemoryPools {
    pub chunks: MemoryBudget,
    pub parts: MemoryBudget,
}

/// A budget too small for its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "the memory budget ({budget} bytes) must hold at least one S3 part ({part} bytes, --part-size) plus 1 MiB for read chunks; raise --memory-budget or lower --part-size"
)]
pub struct BudgetTooSmallForParts {
    pub budget: u64,
    pub part: u64,
}

/// The chunk pool's floor: one 1 MiB chunk (the largest chunk size).
const MIN_CHUNK_POOL: u64 = 1 << 20;

impl MemoryPools {
    /// Half the budget for parts (at least one part), the rest for chunks
    /// (at least 1 MiB).
    pub fn split(budget: u64, part_size: u64) -> Result<Self, BudgetTooSmallForParts> {
        let too_small = BudgetTooSmallForParts {
            budget,
            part: part_size,
        };
        if budget < part_size.saturating_add(MIN_CHUNK_POOL) {
            return Err(too_small);
        }
        let parts = (budget / 2).max(part_size);
        let parts = parts.min(budget - MIN_CHUNK_POOL);
        Ok(Self {
            chunks: MemoryBudget::new(budget - parts),
            parts: MemoryBudget::new(parts),
        })
    }
}

impl ferry_domain::ports::MemoryGaugePort for MemoryPools {
    fn in_use(&self) -> u64 {
        self.chunks.in_use() + self.parts.in_use()
    }

    fn total(&self) -> u64 {
        self.chunks.total() + self.parts.total()
    }
}

#[async_trait::async_trait]
impl ferry_domain::ports::MemoryBudgetPort for MemoryPools {
    async fn reserve(&self, bytes: u64) -> ferry_domain::ports::MemoryReservation {
        let bytes = bytes.min(self.chunks.total());
        loop {
            match self.chunks.acquire(bytes).await {
                Ok(grant) => {
                    return ferry_domain::ports::MemoryReservation::new(grant.bytes(), grant);
                }
                // Unreachable (clamped, and the semaphore is never closed);
                // yield rather than spin if it ever happens.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }
}

impl ferry_domain::ports::MemoryGaugePort for MemoryBudget {
    fn in_use(&self) -> u64 {
        MemoryBudget::in_use(self)
    }

    fn total(&self) -> u64 {
        MemoryBudget::total(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pools_split_the_budget() {
        let p = MemoryPools::split(32 << 20, 8 << 20).unwrap();
        assert_eq!((p.chunks.total(), p.parts.total()), (16 << 20, 16 << 20));
        let p = MemoryPools::split(12 << 20, 8 << 20).unwrap();
        assert_eq!((p.chunks.total(), p.parts.total()), (4 << 20, 8 << 20));
        let p = MemoryPools::split(9 << 20, 8 << 20).unwrap();
        assert_eq!((p.chunks.total(), p.parts.total()), (1 << 20, 8 << 20));
        let err = MemoryPools::split(8 << 20, 8 << 20).unwrap_err();
        assert!(err.to_string().contains("--memory-budget"), "{err}");
    }

    #[tokio::test]
    async fn chunk_reservations_come_from_the_chunk_pool_and_are_clamped() {
        use ferry_domain::ports::{MemoryBudgetPort, MemoryGaugePort};
        let p = MemoryPools::split(10 << 20, 8 << 20).unwrap();
        let r = p.reserve(4 << 20).await;
        assert_eq!(r.bytes(), 2 << 20, "clamped to the chunk pool");
        assert_eq!(MemoryGaugePort::in_use(&p), 2 << 20);
        let part = p.parts.acquire(8 << 20).await.unwrap();
        assert_eq!(MemoryGaugePort::in_use(&p), 10 << 20);
        let waiting = tokio::time::timeout(Duration::from_millis(50), p.reserve(1024)).await;
        assert!(waiting.is_err(), "a full chunk pool makes readers wait");
        drop((r, part));
        assert_eq!(MemoryGaugePort::in_use(&p), 0);
    }

    #[test]
    fn rss_is_read_from_procfs() {
        let rss = rss_bytes().unwrap();
        assert!(rss > 1024 * 1024 && rss < 4 << 30, "{rss}");
    }

    #[test]
    fn alarm_thresholds_with_hysteresis() {
        let mut alarm = MemoryAlarm::new(100);
        let table = [
            (10, None),
            (59, None),
            (60, Some(MemoryAlert::Warning)),
            (57, None),
            (80, Some(MemoryAlert::Critical)),
            (90, Some(MemoryAlert::Emergency)),
            (82, None),
            (79, Some(MemoryAlert::Critical)),
            (30, Some(MemoryAlert::Normal)),
        ];
        for (rss, expected) in table {
            assert_eq!(alarm.sample(rss), expected, "rss {rss}");
        }
        assert_eq!(alarm.level(), MemoryAlert::Normal);
    }

    #[tokio::test]
    async fn grants_are_returned_on_drop() {
        let budget = MemoryBudget::new(10 * 1024);
        let a = budget.acquire(6 * 1024).await.unwrap();
        assert_eq!(budget.in_use(), 6 * 1024);
        assert_eq!(a.bytes(), 6 * 1024);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_request_waits_until_memory_is_free() {
        let budget = MemoryBudget::new(8 * 1024);
        let held = budget.acquire(6 * 1024).await.unwrap();
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), budget.acquire(4 * 1024)).await;
        assert!(waiting.is_err(), "nothing may exceed the budget");
        let b2 = budget.clone();
        let pending = tokio::spawn(async move { b2.acquire(4 * 1024).await.map(|g| g.bytes()) });
        drop(held);
        assert_eq!(pending.await.unwrap().unwrap(), 4 * 1024);
    }

    #[tokio::test]
    async fn impossible_requests_fail_at_once() {
        let budget = MemoryBudget::new(4 * 1024);
        let err = budget.acquire(5 * 1024).await.unwrap_err();
        assert_eq!(err.total, 4 * 1024);
        assert!(err.to_string().contains("--memory-budget"));
    }
}
