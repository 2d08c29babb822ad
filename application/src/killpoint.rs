//! Named points where the crash-test harness can kill the process (abort:
//! no destructors, no cleanup, as with `kill -9`): the `failpoints` feature
//! plus `FAILPOINTS="ferry-before-checkpoint=2*off->return"` (the `fail`
//! crate's syntax) kills at the third pass. Without the feature this is
//! nothing. The adapters have the same helper for their own points.

/// Kills the process here when the harness asked for it.
#[inline]
pub fn kill_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| std::process::abort());
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
