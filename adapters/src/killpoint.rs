//! The adapters' kill points for the crash-test harness (see
//! `ferry_application::killpoint`): during the checkpoint write, after an S3
//! CompleteMultipartUpload, after a temp file's rename.

#[inline]
pub(crate) fn kill_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| std::process::abort());
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
