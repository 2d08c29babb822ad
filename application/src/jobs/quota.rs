//! Per-owner quotas, checked when a job is submitted: how much one owner
//! (token) may have unfinished at once. Jobs per minute and open streams
//! are the API's own limits; these need the job store.

use thiserror::Error;

use ferry_domain::ports::OwnerLoad;

/// What one owner may have unfinished at once; 0: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerQuota {
    /// Jobs not ended.
    pub active_jobs: u64,
    /// Files queued or running across its jobs (a new job's files count
    /// at once; an export's count once its manifest arrives).
    pub queued_files: u64,
    /// Jobs in their export phase (starting or polling a provider).
    pub active_exports: u64,
}

/// A submission over one of its owner's quotas.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct QuotaExceeded {
    /// `active_jobs`, `queued_files` or `active_exports`.
    pub quota: &'static str,
    pub limit: u64,
    pub current: u64,
    pub adding: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quota {}: this owner has {} and may have at most {}",
            self.quota, self.current, self.limit
        )?;
        if self.adding > 1 {
            write!(f, " (this job adds {})", self.adding)?;
        }
        f.write_str("; wait for some to end or cancel some, then submit again")
    }
}

impl OwnerQuota {
    /// Whether a job of `files` files (an export when `export`) fits
    /// beside `load`.
    pub fn admit(&self, load: &OwnerLoad, files: u64, export: bool) -> Result<(), QuotaExceeded> {
        let checks = [
            ("active_jobs", self.active_jobs, load.active_jobs, 1),
            ("queued_files", self.queued_files, load.open_files, files),
            (
                "active_exports",
                self.active_exports,
                load.active_exports,
                u64::from(export),
            ),
        ];
        for (quota, limit, current, adding) in checks {
            if limit > 0 && adding > 0 && current.saturating_add(adding) > limit {
                return Err(QuotaExceeded {
                    quota,
                    limit,
                    current,
                    adding,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_quota_is_checked_with_what_the_job_adds() {
        let quota = OwnerQuota {
            active_jobs: 3,
            queued_files: 100,
            active_exports: 1,
        };
        let load = OwnerLoad {
            active_jobs: 2,
            open_files: 90,
            active_exports: 1,
        };
        assert!(quota.admit(&load, 10, false).is_ok());
        let files = quota.admit(&load, 11, false).unwrap_err();
        assert_eq!(
            (files.quota, files.limit, files.current),
            ("queued_files", 100, 90)
        );
        assert!(files.to_string().contains("(this job adds 11)"), "{files}");
        assert_eq!(
            quota.admit(&load, 0, true).unwrap_err().quota,
            "active_exports"
        );
        let full = OwnerLoad {
            active_jobs: 3,
            ..load
        };
        let jobs = quota.admit(&full, 1, false).unwrap_err();
        assert_eq!(jobs.quota, "active_jobs");
        assert!(
            jobs.to_string()
                .starts_with("quota active_jobs: this owner has 3 and may have at most 3;"),
            "{jobs}"
        );
        // 0: no limit.
        assert!(OwnerQuota::default().admit(&full, 1_000_000, true).is_ok());
    }
}
