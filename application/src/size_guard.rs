//! Size tracking in flight: the limit, the declared length and the expected
//! size are enforced as soon as a violation can be seen.

use ferry_domain::ByteSize;
use ferry_domain::ports::{LengthProblem, ProcessFileError};

/// Counts bytes and enforces the three size rules.
#[derive(Debug, Clone)]
pub struct SizeGuard {
    limit: ByteSize,
    expected: Option<u64>,
    declared: Option<u64>,
    seen: u64,
}

impl SizeGuard {
    pub fn new(limit: ByteSize, expected: Option<u64>) -> Self {
        Self {
            limit,
            expected,
            declared: None,
            seen: 0,
        }
    }

    /// Checks a declared total length before any byte is read.
    pub fn declare(&mut self, total: Option<u64>) -> Result<(), ProcessFileError> {
        self.declared = total;
        let Some(total) = total else { return Ok(()) };
        if total > self.limit.as_u64() {
            return Err(ProcessFileError::TooLarge {
                limit: self.limit,
                size: total,
            });
        }
        if let Some(expected) = self.expected
            && expected != total
        {
            return Err(ProcessFileError::UnexpectedSize {
                expected,
                actual: total,
                problem: if total < expected {
                    LengthProblem::Short
                } else {
                    LengthProblem::Long
                },
            });
        }
        Ok(())
    }

    /// Counts `n` more bytes; fails the moment any rule is broken.
    pub fn add(&mut self, n: u64) -> Result<(), ProcessFileError> {
        self.seen = self.seen.saturating_add(n);
        if let Some(declared) = self.declared
            && self.seen > declared
        {
            return Err(ProcessFileError::LengthMismatch {
                declared,
                received: self.seen,
                problem: LengthProblem::Long,
            });
        }
        if self.seen > self.limit.as_u64() {
            return Err(ProcessFileError::LimitExceeded { limit: self.limit });
        }
        if let Some(expected) = self.expected
            && self.seen > expected
        {
            return Err(ProcessFileError::UnexpectedSize {
                expected,
                actual: self.seen,
                problem: LengthProblem::Long,
            });
        }
        Ok(())
    }

    /// Called at the end of the body.
    pub fn finish(&self) -> Result<u64, ProcessFileError> {
        if let Some(declared) = self.declared
            && self.seen < declared
        {
            return Err(ProcessFileError::LengthMismatch {
                declared,
                received: self.seen,
                problem: LengthProblem::Short,
            });
        }
        if let Some(expected) = self.expected
            && self.seen != expected
        {
            return Err(ProcessFileError::UnexpectedSize {
                expected,
                actual: self.seen,
                problem: LengthProblem::Short,
            });
        }
        Ok(self.seen)
    }

    /// Counts `offset` bytes as already seen (a transfer resumed from a
    /// checkpoint: they were checked by the process that wrote them).
    pub fn resume_at(&mut self, offset: u64) -> Result<(), ProcessFileError> {
        self.seen = 0;
        self.add(offset)
    }

    /// Forgets everything counted after `offset` (a rewind).
    pub fn rewind_to(&mut self, offset: u64) {
        self.seen = self.seen.min(offset);
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_over_limit_fails_before_reading() {
        let mut g = SizeGuard::new(ByteSize::new(100), None);
        assert!(matches!(
            g.declare(Some(101)),
            Err(ProcessFileError::TooLarge { size: 101, .. })
        ));
        let mut g = SizeGuard::new(ByteSize::new(100), None);
        assert!(g.declare(Some(100)).is_ok());
    }

    #[test]
    fn counting_catches_overrun_without_declaration() {
        let mut g = SizeGuard::new(ByteSize::new(10), None);
        g.declare(None).unwrap();
        g.add(6).unwrap();
        g.add(4).unwrap();
        assert!(matches!(
            g.add(1),
            Err(ProcessFileError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn long_and_short_bodies() {
        let mut g = SizeGuard::new(ByteSize::new(1000), None);
        g.declare(Some(10)).unwrap();
        g.add(10).unwrap();
        assert!(matches!(
            g.add(1),
            Err(ProcessFileError::LengthMismatch {
                problem: LengthProblem::Long,
                received: 11,
                ..
            })
        ));
        let mut g = SizeGuard::new(ByteSize::new(1000), None);
        g.declare(Some(10)).unwrap();
        g.add(4).unwrap();
        assert!(matches!(
            g.finish(),
            Err(ProcessFileError::LengthMismatch {
                problem: LengthProblem::Short,
                received: 4,
                ..
            })
        ));
    }

    #[test]
    fn expected_size_is_enforced_both_ways() {
        let mut g = SizeGuard::new(ByteSize::new(1000), Some(5));
        assert!(matches!(
            g.declare(Some(6)),
            Err(ProcessFileError::UnexpectedSize { .. })
        ));
        let mut g = SizeGuard::new(ByteSize::new(1000), Some(5));
        g.declare(None).unwrap();
        assert!(g.add(6).is_err());
        let mut g = SizeGuard::new(ByteSize::new(1000), Some(5));
        g.declare(None).unwrap();
        g.add(3).unwrap();
        assert!(g.finish().is_err());
        let mut g = SizeGuard::new(ByteSize::new(1000), Some(5));
        g.add(5).unwrap();
        assert_eq!(g.finish().unwrap(), 5);
    }
}
