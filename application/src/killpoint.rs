//! Named points where the crash-test harness can kill the process (abort:
//! no destructors, no cleanup, as with `kill -9`). With the `failpoints`
//! feature, `FAILPOINTS="ferry-before-checkpoint=2*off->return"` (the `fail`
//! crate's syntax, `;` between points) kills at the third pass, after
//! writing `NAME OFFSET` (the bytes hashed when it died) to the file named by
//! `FERRY_KILL_REPORT`, so the harness knows exactly how much a restart
//! fetches again. Without the feature all of this is nothing. The adapters
//! have the same helper for their own points.

/// Reads `FAILPOINTS` (call once at startup). Returns the problems with it,
/// one per bad entry, instead of panicking.
pub fn arm_from_env() -> Vec<String> {
    #[cfg(feature = "failpoints")]
    {
        let Ok(spec) = std::env::var("FAILPOINTS") else {
            return Vec::new();
        };
        spec.split(';')
            .filter(|e| !e.trim().is_empty())
            .filter_map(|entry| match entry.split_once('=') {
                Some((name, actions)) => fail::cfg(name.trim(), actions.trim())
                    .err()
                    .map(|e| format!("FAILPOINTS {entry}: {e}")),
                None => Some(format!("FAILPOINTS {entry}: expected NAME=ACTIONS")),
            })
            .collect()
    }
    #[cfg(not(feature = "failpoints"))]
    Vec::new()
}

/// Kills the process here, at byte `offset`, when the harness asked for it.
#[inline]
pub fn kill_point(name: &str, offset: u64) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| die(name, offset));
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, offset);
}

#[cfg(feature = "failpoints")]
fn die(name: &str, offset: u64) {
    if let Some(path) = std::env::var_os("FERRY_KILL_REPORT") {
        let _ = std::fs::write(path, format!("{name} {offset}\n"));
    }
    std::process::abort();
}
