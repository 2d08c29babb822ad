//! The adapters' kill points for the crash-test harness (see
//! `ferry_application::killpoint`, which also arms them): during the
//! checkpoint write, after an S3 CompleteMultipartUpload, after a temp
//! file's rename.

#[inline]
pub(crate) fn kill_point(name: &str, offset: u64) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        if let Some(path) = std::env::var_os("FERRY_KILL_REPORT") {
            let _ = std::fs::write(path, format!("{name} {offset}\n"));
        }
        std::process::abort()
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, offset);
}
