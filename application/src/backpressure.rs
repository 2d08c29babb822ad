//! The backpressure gate: transfers are admitted only while the pressure
//! level's cap allows (see `ferry_domain::pressure` for the score, levels
//! and hysteresis).
//!
//! Inputs: the memory budget's occupancy (a [`MemoryGaugePort`]), the
//! transfers holding an [`Admission`], and per-chunk processing latency
//! recorded by ProcessFile (p95 of the last [`LATENCY_WINDOW`] chunks).
//! A waiting transfer re-evaluates whenever a transfer ends and at least
//! every [`REEVALUATE`], since memory and latency change on their own.
//!
//! Owners (tenants) share the level's cap: below CRITICAL, an owner holding
//! fewer than its fair share (the cap divided by the owners running or
//! waiting) is admitted even when the gate is full because other owners
//! hold more than theirs. Running transfers cannot be taken back, so
//! without this one tenant's long-lived streams (which also raise the
//! pressure) would keep every other tenant out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use ferry_domain::ports::MemoryGaugePort;
use ferry_domain::pressure::score;
use ferry_domain::{
    AdmissionCaps, PressureController, PressureInputs, PressureLevel, PressureScore,
};

/// Chunk latencies kept for the p95.
pub const LATENCY_WINDOW: usize = 128;
/// A waiting transfer looks again at least this often.
pub const REEVALUATE: Duration = Duration::from_millis(100);

/// Settings of the gate.
#[derive(Debug, Clone)]
pub struct BackpressureConfig {
    /// Transfers admitted at NONE.
    pub max_active: usize,
    pub caps: AdmissionCaps,
    /// Per-chunk processing latency target (spec: p95 < 200 ms).
    pub latency_target: Duration,
    /// Hysteresis band, in score points.
    pub band: u8,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            max_active: 16,
            caps: AdmissionCaps::default(),
            latency_target: Duration::from_millis(200),
            band: 10,
        }
    }
}

/// What the gate sees now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureReport {
    pub level: PressureLevel,
    pub score: PressureScore,
    pub active: usize,
    /// Transfers the level admits.
    pub cap: usize,
    pub chunk_latency_p95: Option<Duration>,
}

struct State {
    controller: PressureController,
    active: usize,
    /// Per owner: (admitted, waiting).
    owners: HashMap<String, (usize, usize)>,
    latencies: VecDeque<Duration>,
    last: PressureScore,
}

/// The gate. Shared (`Arc`) by the job service and ProcessFile.
pub struct Backpressure {
    memory: Arc<dyn MemoryGaugePort>,
    config: BackpressureConfig,
    state: Mutex<State>,
    changed: Notify,
    /// The level of the last evaluation, for cheap reads per chunk.
    level: AtomicU8,
}

impl std::fmt::Debug for Backpressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backpressure")
            .field("config", &self.config)
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

/// A running transfer's place; freed when dropped.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<Backpressure>,
    owner: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut st = self.gate.lock();
            st.active = st.active.saturating_sub(1);
            st.count(&self.owner, |(admitted, _)| *admitted -= 1);
        }
        self.gate.changed.notify_waiters();
    }
}

/// An owner's place in the wait, counted while it waits.
struct Waiting<'a> {
    gate: &'a Backpressure,
    owner: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gate
            .lock()
            .count(self.owner, |(_, waiting)| *waiting -= 1);
    }
}

impl State {
    /// Changes an owner's counts; an owner with none left is forgotten.
    fn count(&mut self, owner: &str, change: impl FnOnce(&mut (usize, usize))) {
        let entry = self.owners.entry(owner.to_owned()).or_default();
        change(entry);
        if *entry == (0, 0) {
            self.owners.remove(owner);
        }
    }
}

fn p95(latencies: &VecDeque<Duration>) -> Option<Duration> {
    if latencies.is_empty() {
        return None;
    }
    let mut sorted: Vec<Duration> = latencies.iter().copied().collect();
    sorted.sort_unstable();
    let rank = (sorted.len() * 95).div_ceil(100).saturating_sub(1);
    sorted.get(rank).copied()
}

impl Backpressure {
    pub fn new(memory: Arc<dyn MemoryGaugePort>, config: BackpressureConfig) -> Self {
        Self {
            memory,
            state: Mutex::new(State {
                controller: PressureController::new(config.band),
                active: 0,
                owners: HashMap::new(),
                latencies: VecDeque::with_capacity(LATENCY_WINDOW),
                last: PressureScore::default(),
            }),
            config,
            changed: Notify::new(),
            level: AtomicU8::new(PressureLevel::None.ordinal()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Scores the current inputs and moves the level (with hysteresis).
    fn evaluate(&self, st: &mut State) -> (PressureLevel, usize) {
        let inputs = PressureInputs {
            memory_used: self.memory.in_use(),
            memory_total: self.memory.total(),
            active: st.active,
            max_active: self.config.max_active,
            chunk_latency: p95(&st.latencies),
            latency_target: self.config.latency_target,
        };
        let s = score(&inputs);
        st.last = s;
        let level = st.controller.observe(s.total());
        self.level.store(level.ordinal(), Ordering::Relaxed);
        (level, self.config.caps.cap(level, self.config.max_active))
    }

    /// Waits until the level admits one more transfer (of no owner).
    pub async fn admit(self: &Arc<Self>) -> Admission {
        self.admit_for("").await
    }

    /// Waits until the level admits one more transfer of `owner`: while the
    /// cap allows, or while the owner holds less than its fair share of
    /// the cap (below CRITICAL).
    pub async fn admit_for(self: &Arc<Self>, owner: &str) -> Admission {
        self.lock().count(owner, |(_, waiting)| *waiting += 1);
        let _waiting = Waiting { gate: self, owner };
        loop {
            let notified = self.changed.notified();
            {
                let mut st = self.lock();
                let (level, cap) = self.evaluate(&mut st);
                let share = (cap / st.owners.len().max(1)).max(1);
                let mine = st.owners.get(owner).map_or(0, |(admitted, _)| *admitted);
                if st.active < cap || (level != PressureLevel::Critical && mine < share) {
                    st.active += 1;
                    st.count(owner, |(admitted, _)| *admitted += 1);
                    return Admission {
                        gate: self.clone(),
                        owner: owner.to_owned(),
                    };
                }
            }
            let _ = tokio::time::timeout(REEVALUATE, notified).await;
        }
    }

    /// The level at the last evaluation (admission, report), without
    /// scoring again.
    pub fn level(&self) -> PressureLevel {
        let n = self.level.load(Ordering::Relaxed);
        PressureLevel::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(PressureLevel::Critical)
    }

    /// Records how long one chunk took to process (hash and write).
    pub fn record_chunk(&self, took: Duration) {
        let mut st = self.lock();
        if st.latencies.len() == LATENCY_WINDOW {
            st.latencies.pop_front();
        }
        st.latencies.push_back(took);
    }

    /// Scores now and reports.
    pub fn report(&self) -> PressureReport {
        let mut st = self.lock();
        let (level, cap) = self.evaluate(&mut st);
        PressureReport {
            level,
            score: st.last,
            active: st.active,
            cap,
            chunk_latency_p95: p95(&st.latencies),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Gauge(AtomicU64);

    impl MemoryGaugePort for Gauge {
        fn in_use(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn total(&self) -> u64 {
            100
        }
    }

    fn gate(max_active: usize) -> (Arc<Backpressure>, Arc<Gauge>) {
        let gauge = Arc::new(Gauge(AtomicU64::new(0)));
        let gate = Arc::new(Backpressure::new(
            gauge.clone(),
            BackpressureConfig {
                max_active,
                ..BackpressureConfig::default()
            },
        ));
        (gate, gauge)
    }

    #[tokio::test]
    async fn admits_up_to_the_cap_of_the_level() {
        // max 10: each transfer adds 3 points. 0-6 active: NONE/LIGHT.
        let (gate, _) = gate(10);
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(gate.admit().await);
        }
        let r = gate.report();
        assert_eq!(r.active, 6);
        assert_eq!(r.score.streams, 18);
        assert_eq!(r.level, PressureLevel::None);
        held.push(gate.admit().await);
        // 7 active = 21 points: LIGHT, cap 6: the 8th waits.
        assert_eq!(gate.report().level, PressureLevel::Light);
        let waiting = tokio::time::timeout(Duration::from_millis(250), gate.admit()).await;
        assert!(waiting.is_err(), "LIGHT admits at most 6");
        // Two end: 5 active = 15 points, but LIGHT holds until < 10 (band).
        held.truncate(5);
        assert_eq!(gate.report().level, PressureLevel::Light);
        held.truncate(3);
        assert_eq!(gate.report().level, PressureLevel::None);
        assert_eq!(gate.report().cap, 10);
    }

    #[tokio::test]
    async fn an_owner_below_its_share_passes_a_gate_full_of_another_owners() {
        // max 10, LIGHT caps at 6: `a` takes 7 and the level is LIGHT.
        let (gate, _) = gate(10);
        let held: Vec<Admission> =
            futures::future::join_all((0..7).map(|_| gate.admit_for("a"))).await;
        assert_eq!(gate.report().level, PressureLevel::Light);
        let more_a = tokio::time::timeout(Duration::from_millis(250), gate.admit_for("a")).await;
        assert!(more_a.is_err(), "`a` is over the cap and over its share");
        // Two owners: each is owed 3 of the 6. `b` gets its 3, not a 4th.
        let mut b = Vec::new();
        for _ in 0..3 {
            b.push(
                tokio::time::timeout(Duration::from_secs(1), gate.admit_for("b"))
                    .await
                    .expect("b is below its share"),
            );
        }
        let fourth = tokio::time::timeout(Duration::from_millis(250), gate.admit_for("b")).await;
        assert!(fourth.is_err(), "b holds its share");
        assert_eq!(gate.report().active, 10);
        drop(b);
        drop(held);
        assert_eq!(gate.report().active, 0);
        assert!(gate.lock().owners.is_empty(), "no owner left behind");
    }

    #[tokio::test]
    async fn critical_pressure_pauses_admission_until_it_falls() {
        let (gate, gauge) = gate(2);
        // Budget full (40) and slow chunks (30): 70, HEAVY admits one.
        gauge.0.store(100, Ordering::SeqCst);
        for _ in 0..LATENCY_WINDOW {
            gate.record_chunk(Duration::from_secs(1));
        }
        let first = gate.admit().await;
        // With it running (15 more): 85, CRITICAL: admission paused.
        let r = gate.report();
        assert_eq!(r.score.total(), 85);
        assert_eq!(r.level, PressureLevel::Critical);
        assert_eq!(r.cap, 0);
        let gate2 = gate.clone();
        let blocked = tokio::spawn(async move { gate2.admit().await });
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!blocked.is_finished(), "CRITICAL pauses admission");
        // Pressure falls: memory freed, fast chunks.
        gauge.0.store(0, Ordering::SeqCst);
        for _ in 0..LATENCY_WINDOW {
            gate.record_chunk(Duration::from_millis(5));
        }
        let second = tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .expect("admitted once pressure fell")
            .unwrap();
        assert_eq!(gate.report().active, 2);
        drop((first, second));
        assert_eq!(gate.report().active, 0);
    }

    #[test]
    fn p95_of_the_window() {
        let mut v: VecDeque<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(p95(&v), Some(Duration::from_millis(95)));
        v.clear();
        assert_eq!(p95(&v), None);
        v.push_back(Duration::from_millis(7));
        assert_eq!(p95(&v), Some(Duration::from_millis(7)));
    }
}
