//! SHA-256 (always) and MD5 (optionally) computed in flight, with a state
//! that can be captured at any offset and restored later (resume).

use ferry_domain::{Checksum, ChecksumAlgorithm};
use md5::Md5;
use sha2::Sha256;
use sha2::digest::Digest;
use sha2::digest::common::hazmat::SerializableState;
use thiserror::Error;

/// The running digests of one transfer.
#[derive(Clone)]
pub struct StreamHasher {
    sha256: Sha256,
    md5: Option<Md5>,
    bytes: u64,
}

impl std::fmt::Debug for StreamHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHasher")
            .field("bytes", &self.bytes)
            .field("md5", &self.md5.is_some())
            .finish()
    }
}

pub use ferry_domain::HashState;

/// A stored hash state that cannot be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the saved {algorithm} state is corrupt or from an incompatible version")]
pub struct InvalidHashState {
    pub algorithm: ChecksumAlgorithm,
}

impl StreamHasher {
    pub fn new(with_md5: bool) -> Self {
        Self {
            sha256: Sha256::new(),
            md5: with_md5.then(Md5::new),
            bytes: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        if let Some(md5) = &mut self.md5 {
            md5.update(chunk);
        }
        self.bytes += chunk.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Captures the state at the current offset.
    pub fn snapshot(&self) -> HashState {
        HashState {
            bytes: self.bytes,
            sha256: self.sha256.serialize().to_vec(),
            md5: self.md5.as_ref().map(|m| m.serialize().to_vec()),
        }
    }

    /// Rebuilds a hasher from a snapshot.
    pub fn restore(state: &HashState) -> Result<Self, InvalidHashState> {
        let sha256 = deserialize::<Sha256>(&state.sha256, ChecksumAlgorithm::Sha256)?;
        let md5 = state
            .md5
            .as_deref()
            .map(|raw| deserialize::<Md5>(raw, ChecksumAlgorithm::Md5))
            .transpose()?;
        Ok(Self {
            sha256,
            md5,
            bytes: state.bytes,
        })
    }

    /// Finishes: the SHA-256 and, if computed, the MD5.
    pub fn finalize(self) -> (Checksum, Option<Checksum>) {
        let sha: [u8; 32] = self.sha256.finalize().into();
        let md5 = self.md5.map(|m| {
            let digest: [u8; 16] = m.finalize().into();
            Checksum::from_md5_digest(&digest)
        });
        (Checksum::from_sha256_digest(&sha), md5)
    }
}

/// Chunks at least this long are hashed on a blocking thread; shorter ones
/// cost less to hash than to hand over.
pub const OFFLOAD_AT: usize = 256 * 1024;

/// A [`StreamHasher`] fed in order whose large chunks are hashed on a
/// blocking thread, so that hashing chunk N overlaps writing chunk N and
/// reading chunk N+1 (two cores: one for the socket and the write, one for
/// the digests). At most one chunk is in flight; whatever it must keep
/// alive (the chunk itself, its memory reservation) is held until it is
/// hashed.
pub struct PipelinedHasher {
    /// The hasher when no chunk is in flight (a placeholder while one is).
    hasher: StreamHasher,
    busy: Option<tokio::task::JoinHandle<StreamHasher>>,
    fed: u64,
}

impl std::fmt::Debug for PipelinedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedHasher")
            .field("fed", &self.fed)
            .field("busy", &self.busy.is_some())
            .finish()
    }
}

/// The blocking thread hashing a chunk was lost (the runtime is shutting
/// down).
#[derive(Debug, Error)]
#[error("hashing was interrupted: {0}")]
pub struct HashingInterrupted(#[source] tokio::task::JoinError);

impl PipelinedHasher {
    pub fn new(hasher: StreamHasher) -> Self {
        Self {
            fed: hasher.bytes(),
            hasher,
            busy: None,
        }
    }

    /// Bytes fed so far, hashed or in flight.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Waits for the chunk in flight, if any, and gives the hasher.
    pub async fn settled(&mut self) -> Result<&mut StreamHasher, HashingInterrupted> {
        if let Some(handle) = self.busy.take() {
            self.hasher = handle.await.map_err(HashingInterrupted)?;
        }
        Ok(&mut self.hasher)
    }

    /// Feeds the next chunk: hashed on a blocking thread when it is large
    /// and a runtime is at hand (`keep` dropped once it is hashed), else
    /// here. Waits for the previous chunk first.
    pub async fn feed(
        &mut self,
        chunk: bytes::Bytes,
        keep: impl Send + 'static,
    ) -> Result<(), HashingInterrupted> {
        self.settled().await?;
        self.fed += chunk.len() as u64;
        let hasher = &mut self.hasher;
        let runtime = (chunk.len() >= OFFLOAD_AT)
            .then(tokio::runtime::Handle::try_current)
            .and_then(Result::ok);
        match runtime {
            Some(runtime) => {
                let mut owned = std::mem::replace(hasher, StreamHasher::new(false));
                self.busy = Some(runtime.spawn_blocking(move || {
                    owned.update(&chunk);
                    drop(keep);
                    owned
                }));
            }
            None => hasher.update(&chunk),
        }
        Ok(())
    }

    /// Waits for the last chunk and gives the hasher back.
    pub async fn finish(mut self) -> Result<StreamHasher, HashingInterrupted> {
        self.settled().await?;
        Ok(self.hasher)
    }
}

fn deserialize<T: SerializableState>(
    raw: &[u8],
    algorithm: ChecksumAlgorithm,
) -> Result<T, InvalidHashState> {
    let array = raw.try_into().map_err(|_| InvalidHashState { algorithm })?;
    T::deserialize(array).map_err(|_| InvalidHashState { algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let mut h = StreamHasher::new(true);
        h.update(b"te");
        h.update(b"st");
        let (sha, md5) = h.finalize();
        assert_eq!(
            sha.hex(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(md5.unwrap().hex(), "098f6bcd4621d373cade4e832627b4f6");
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_hashing_gives_the_same_digests_and_releases_what_it_keeps() {
        let data = pattern(3 * OFFLOAD_AT + 12_345);
        let mut plain = StreamHasher::new(true);
        plain.update(&data);
        let want = plain.finalize();

        let kept = std::sync::Arc::new(());
        let mut pipe = PipelinedHasher::new(StreamHasher::new(true));
        // Large (offloaded) and small (inline) chunks, in order.
        let cuts = [
            0,
            OFFLOAD_AT + 1,
            OFFLOAD_AT + 100,
            2 * OFFLOAD_AT + 7,
            data.len(),
        ];
        for pair in cuts.windows(2) {
            let chunk = bytes::Bytes::copy_from_slice(&data[pair[0]..pair[1]]);
            pipe.feed(chunk, kept.clone()).await.unwrap();
            assert_eq!(pipe.fed(), pair[1] as u64);
        }
        let settled = pipe.settled().await.unwrap().snapshot();
        assert_eq!(settled.bytes, data.len() as u64);
        let hasher = pipe.finish().await.unwrap();
        assert_eq!(
            std::sync::Arc::strong_count(&kept),
            1,
            "every chunk's keep-alive is dropped once hashed"
        );
        assert_eq!(hasher.bytes(), data.len() as u64);
        assert_eq!(hasher.finalize(), want);
    }

    #[test]
    fn without_a_runtime_chunks_are_hashed_in_place() {
        let data = pattern(2 * OFFLOAD_AT);
        let mut plain = StreamHasher::new(false);
        plain.update(&data);
        let want = plain.finalize();
        let got = futures::executor::block_on(async {
            let mut pipe = PipelinedHasher::new(StreamHasher::new(false));
            pipe.feed(bytes::Bytes::from(data), ()).await.unwrap();
            pipe.finish().await.unwrap()
        });
        assert_eq!(got.finalize(), want);
    }

    #[test]
    fn md5_only_when_asked() {
        let (_, md5) = StreamHasher::new(false).finalize();
        assert!(md5.is_none());
    }

    #[test]
    fn snapshot_restores_at_any_offset() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = StreamHasher::new(true);
        whole.update(&data);
        let want = whole.finalize();
        for cut in [0, 1, 63, 64, 65, 4_999, 10_000] {
            let mut first = StreamHasher::new(true);
            first.update(&data[..cut]);
            let state = first.snapshot();
            assert_eq!(state.bytes, cut as u64);
            assert!(state.sha256.len() < 128, "{}", state.sha256.len());
            let mut resumed = StreamHasher::restore(&state).unwrap();
            resumed.update(&data[cut..]);
            assert_eq!(resumed.bytes(), 10_000);
            assert_eq!(resumed.finalize(), want, "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let mut state = StreamHasher::new(true).snapshot();
        state.sha256.truncate(3);
        assert_eq!(
            StreamHasher::restore(&state).unwrap_err().algorithm,
            ChecksumAlgorithm::Sha256
        );
        let mut state = StreamHasher::new(true).snapshot();
        state.md5 = Some(vec![1, 2]);
        assert_eq!(
            StreamHasher::restore(&state).unwrap_err().algorithm,
            ChecksumAlgorithm::Md5
        );
    }
}
