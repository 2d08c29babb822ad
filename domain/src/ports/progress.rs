//! Progress reporting from a running transfer: `ProgressPort`.

/// Told about a transfer's progress. Calls are cheap and frequent (once per
/// chunk); implementations rate-limit what they show.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait ProgressPort: Send + Sync {
    /// The body is about to be read; `total` is its length when known.
    fn started(&self, total: Option<u64>);
    /// `done` bytes have been stored so far (monotonic within an attempt).
    fn advanced(&self, done: u64);
    /// The transfer ended, successfully or not.
    fn finished(&self, ok: bool);
    /// A checkpointed transfer continues from `offset` (bytes below it are
    /// not fetched again).
    fn resumed(&self, _offset: u64) {}
    /// A checkpoint could not be used (`reason`: the source changed, the
    /// staged bytes are gone...): the transfer starts again from zero.
    fn restarted(&self, _reason: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressPort for NoProgress {
    fn started(&self, _total: Option<u64>) {}
    fn advanced(&self, _done: u64) {}
    fn finished(&self, _ok: bool) {}
}
