//! Backpressure: how loaded ferry is, as one score and five levels (spec
//! 001's multi-factor model), and how many transfers each level admits.
//!
//! Score (0-100) = memory (0-40) + streams (0-30) + latency (0-30):
//! - memory: `40 × used / budget` (the memory budget's bytes in use);
//! - streams: `30 × active / max` (transfers running against the
//!   configured maximum);
//! - latency: recent per-chunk processing latency (p95) against its target:
//!   0 up to half the target, rising linearly to 30 at twice the target.
//!
//! Levels by score: NONE < 20 <= LIGHT < 40 <= MODERATE < 60 <= HEAVY < 80
//! <= CRITICAL. Admission caps: NONE admits up to the maximum, LIGHT 6,
//! MODERATE 3, HEAVY 1 (configurable), CRITICAL pauses admission.
//!
//! Hysteresis: a level rises as soon as the score reaches it, but falls only
//! once the score is `band` points (default 10) below the level's lower
//! bound, so a score hovering at a boundary does not flap.

use std::time::Duration;

/// How loaded ferry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PressureLevel {
    None,
    Light,
    Moderate,
    Heavy,
    Critical,
}

impl PressureLevel {
    pub const ALL: [PressureLevel; 5] = [
        PressureLevel::None,
        PressureLevel::Light,
        PressureLevel::Moderate,
        PressureLevel::Heavy,
        PressureLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PressureLevel::None => "none",
            PressureLevel::Light => "light",
            PressureLevel::Moderate => "moderate",
            PressureLevel::Heavy => "heavy",
            PressureLevel::Critical => "critical",
        }
    }

    /// 0 (NONE) to 4 (CRITICAL), for a gauge.
    pub fn ordinal(self) -> u8 {
        match self {
            PressureLevel::None => 0,
            PressureLevel::Light => 1,
            PressureLevel::Moderate => 2,
            PressureLevel::Heavy => 3,
            PressureLevel::Critical => 4,
        }
    }

    /// The lowest score of this level.
    pub fn lower_bound(self) -> u8 {
        self.ordinal() * 20
    }

    /// The level a score falls in, without hysteresis.
    pub fn for_score(score: u8) -> Self {
        match score {
            0..=19 => PressureLevel::None,
            20..=39 => PressureLevel::Light,
            40..=59 => PressureLevel::Moderate,
            60..=79 => PressureLevel::Heavy,
            _ => PressureLevel::Critical,
        }
    }
}

/// What the score is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureInputs {
    pub memory_used: u64,
    pub memory_total: u64,
    pub active: usize,
    pub max_active: usize,
    /// Recent per-chunk processing latency (p95); `None` before any chunk.
    pub chunk_latency: Option<Duration>,
    pub latency_target: Duration,
}

/// The score, by factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PressureScore {
    /// 0-40.
    pub memory: u8,
    /// 0-30.
    pub streams: u8,
    /// 0-30.
    pub latency: u8,
}

impl PressureScore {
    pub fn total(self) -> u8 {
        self.memory + self.streams + self.latency
    }
}

/// `points × part / whole`, rounded, at most `points`.
fn share(points: u8, part: f64, whole: f64) -> u8 {
    if whole <= 0.0 {
        return points;
    }
    let x = (f64::from(points) * part / whole).round();
    x.clamp(0.0, f64::from(points)) as u8
}

/// The spec's multi-factor score.
pub fn score(inputs: &PressureInputs) -> PressureScore {
    let memory = share(40, inputs.memory_used as f64, inputs.memory_total as f64);
    let streams = share(30, inputs.active as f64, inputs.max_active as f64);
    let latency = match inputs.chunk_latency {
        None => 0,
        Some(p95) => {
            let target = inputs.latency_target.as_secs_f64();
            // 0 at half the target, 30 at twice the target.
            share(30, p95.as_secs_f64() - target / 2.0, target * 1.5)
        }
    };
    PressureScore {
        memory,
        streams,
        latency,
    }
}

/// Concurrent transfers admitted at each level below NONE's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionCaps {
    pub light: usize,
    pub moderate: usize,
    pub heavy: usize,
}

impl Default for AdmissionCaps {
    fn default() -> Self {
        Self {
            light: 6,
            moderate: 3,
            heavy: 1,
        }
    }
}

impl AdmissionCaps {
    /// How many transfers may run at `level` (0: admission paused).
    pub fn cap(&self, level: PressureLevel, max_active: usize) -> usize {
        match level {
            PressureLevel::None => max_active,
            PressureLevel::Light => self.light.min(max_active),
            PressureLevel::Moderate => self.moderate.min(max_active),
            PressureLevel::Heavy => self.heavy.min(max_active),
            PressureLevel::Critical => 0,
        }
    }
}

/// The level with hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureController {
    level: PressureLevel,
    band: u8,
}

impl Default for PressureController {
    fn default() -> Self {
        Self::new(10)
    }
}

impl PressureController {
    /// `band`: how far below a level's lower bound the score must fall
    /// before the level drops.
    pub fn new(band: u8) -> Self {
        Self {
            level: PressureLevel::None,
            band,
        }
    }

    pub fn level(&self) -> PressureLevel {
        self.level
    }

    /// Takes a new score; returns the level it leads to.
    pub fn observe(&mut self, score: u8) -> PressureLevel {
        let raw = PressureLevel::for_score(score);
        if raw > self.level {
            self.level = raw;
        } else if raw < self.level {
            // Drop to the level the score would reach with the band added:
            // only as far as the score is clearly below.
            let damped = PressureLevel::for_score(score.saturating_add(self.band));
            if damped < self.level {
                self.level = damped;
            }
        }
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(used: u64, active: usize, latency_ms: Option<u64>) -> PressureInputs {
        PressureInputs {
            memory_used: used,
            memory_total: 100,
            active,
            max_active: 10,
            chunk_latency: latency_ms.map(Duration::from_millis),
            latency_target: Duration::from_millis(200),
        }
    }

    #[test]
    fn score_table() {
        // (memory used of 100, active of 10, p95 ms) -> (memory, streams, latency)
        let table = [
            ((0, 0, None), (0, 0, 0)),
            ((50, 0, None), (20, 0, 0)),
            ((100, 0, None), (40, 0, 0)),
            ((150, 0, None), (40, 0, 0)),
            ((0, 5, None), (0, 15, 0)),
            ((0, 10, None), (0, 30, 0)),
            ((0, 12, None), (0, 30, 0)),
            ((0, 0, Some(50)), (0, 0, 0)),
            ((0, 0, Some(100)), (0, 0, 0)),
            ((0, 0, Some(250)), (0, 0, 15)),
            ((0, 0, Some(400)), (0, 0, 30)),
            ((0, 0, Some(5_000)), (0, 0, 30)),
            ((75, 8, Some(300)), (30, 24, 20)),
        ];
        for ((used, active, lat), (m, s, l)) in table {
            let got = score(&inputs(used, active, lat));
            assert_eq!(
                (got.memory, got.streams, got.latency),
                (m, s, l),
                "used {used}, active {active}, latency {lat:?}"
            );
        }
        let zero_budget = PressureInputs {
            memory_total: 0,
            ..inputs(0, 0, None)
        };
        assert_eq!(score(&zero_budget).memory, 40);
    }

    #[test]
    fn levels_by_score() {
        let table = [
            (0, PressureLevel::None),
            (19, PressureLevel::None),
            (20, PressureLevel::Light),
            (39, PressureLevel::Light),
            (40, PressureLevel::Moderate),
            (59, PressureLevel::Moderate),
            (60, PressureLevel::Heavy),
            (79, PressureLevel::Heavy),
            (80, PressureLevel::Critical),
            (100, PressureLevel::Critical),
        ];
        for (s, level) in table {
            assert_eq!(PressureLevel::for_score(s), level, "{s}");
        }
    }

    #[test]
    fn caps_by_level() {
        let caps = AdmissionCaps::default();
        let table = [
            (PressureLevel::None, 16),
            (PressureLevel::Light, 6),
            (PressureLevel::Moderate, 3),
            (PressureLevel::Heavy, 1),
            (PressureLevel::Critical, 0),
        ];
        for (level, cap) in table {
            assert_eq!(caps.cap(level, 16), cap, "{level:?}");
        }
        assert_eq!(caps.cap(PressureLevel::Light, 4), 4);
    }

    #[test]
    fn hysteresis_rises_at_once_and_falls_past_the_band() {
        let mut c = PressureController::default();
        // (score, level after it)
        let table = [
            (10, PressureLevel::None),
            (20, PressureLevel::Light),
            (15, PressureLevel::Light), // 15 + 10 = 25: still LIGHT
            (19, PressureLevel::Light), // hovering at the boundary: no flap
            (21, PressureLevel::Light),
            (9, PressureLevel::None),      // 9 + 10 < 20: falls
            (85, PressureLevel::Critical), // straight up
            (75, PressureLevel::Critical), // 85: still CRITICAL
            (69, PressureLevel::Heavy),    // 79: HEAVY
            (45, PressureLevel::Moderate), // 55
            (50, PressureLevel::Moderate),
            (0, PressureLevel::None),
        ];
        for (i, (s, level)) in table.into_iter().enumerate() {
            assert_eq!(c.observe(s), level, "step {i}: score {s}");
        }
    }
}
