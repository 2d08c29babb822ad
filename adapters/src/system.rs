//! What the process asks of the operating system beside tokio's I/O.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The kernel's default ceiling (`fs.nr_open`) when the hard limit says
/// "unlimited".
const NR_OPEN: u64 = 1 << 20;

/// Raises this process's soft limit of open files to its hard limit (as
/// Go's runtime and nginx's `worker_rlimit_nofile` do): a server holding
/// many connections, or a copy of many sources, should not fail with "Too
/// many open files" at a soft limit of 1024 that its administrator already
/// allows past. Returns the soft limit now in force (`None`: unlimited);
/// nothing changes if it cannot be raised.
pub fn raise_open_file_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.unwrap_or(NR_OPEN);
    match limit.current {
        Some(current) if current < target => {
            let raised = Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Some(target),
                Err(_) => Some(current),
            }
        }
        current => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let now = raise_open_file_limit();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, now);
        assert_eq!(
            after.maximum, before.maximum,
            "the hard limit is left alone"
        );
        if let Some(hard) = before.maximum {
            assert_eq!(now, Some(hard));
        }
        // Idempotent.
        assert_eq!(raise_open_file_limit(), now);
    }
}
