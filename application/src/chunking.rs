//! Adaptive chunking: chunk size by file size class, and a stream
//! adaptor that re-cuts whatever frames a source yields into chunks of that
//! size, so that hashing and storage writes see few, evenly sized chunks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;

const KIB: usize = 1024;
const MB: u64 = 1_000_000;

/// Chunk size for a body of `len` bytes (its size class):
/// under 1 MB 32 KiB, under 10 MB 64 KiB, under 100 MB 128 KiB, else
/// 256 KiB; 64 KiB when the length is unknown.
/// The smallest chunk pressure shrinks to.
pub const MIN_PRESSURE_CHUNK: usize = 32 * KIB;

/// The next chunk size under `level`: MODERATE or worse halves it toward
/// 32 KiB (less memory per transfer, shorter holds); NONE doubles it back
/// toward the file-size class's size; LIGHT keeps it.
pub fn chunk_size_under(
    level: ferry_domain::PressureLevel,
    current: usize,
    class_size: usize,
) -> usize {
    use ferry_domain::PressureLevel as L;
    let floor = MIN_PRESSURE_CHUNK.min(class_size);
    match level {
        L::None => current.saturating_mul(2).min(class_size).max(floor),
        L::Light => current.clamp(floor, class_size.max(floor)),
        L::Moderate | L::Heavy | L::Critical => (current / 2).max(floor),
    }
}

pub fn chunk_size_for(len: Option<u64>) -> usize {
    match len {
        None => 64 * KIB,
        Some(n) if n < MB => 32 * KIB,
        Some(n) if n < 10 * MB => 64 * KIB,
        Some(n) if n < 100 * MB => 128 * KIB,
        Some(_) => 256 * KIB,
    }
}

/// Re-cuts a byte stream into chunks that end at multiples of `target` bytes
/// of the absolute offset (so a stream resumed at an aligned offset, or a
/// target changed mid-way, keeps every multiple of any larger power-of-two
/// size, e.g. a 1 MiB part boundary, on a chunk boundary). The last chunk may
/// be shorter. Memory held: at most one chunk plus one inbound frame.
/// Bytes received before an error are yielded before the error, so a caller
/// always knows the exact offset at which the source failed.
#[derive(Debug)]
pub struct Rechunker<S, E> {
    inner: S,
    target: usize,
    buf: BytesMut,
    carry: Option<Bytes>,
    /// Absolute offset of the first byte of `buf`.
    offset: u64,
    pending_error: Option<E>,
    done: bool,
}

impl<S, E> Rechunker<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    pub fn new(inner: S, target: usize) -> Self {
        Self::starting_at(inner, target, 0)
    }

    /// A stream whose first byte is at absolute `offset`.
    pub fn starting_at(inner: S, target: usize, offset: u64) -> Self {
        Self {
            inner,
            target: target.max(1),
            buf: BytesMut::new(),
            carry: None,
            offset,
            pending_error: None,
            done: false,
        }
    }

    /// Changes the chunk size from the next chunk on.
    pub fn set_target(&mut self, target: usize) {
        self.target = target.max(1);
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// Length of the chunk that starts at the current offset.
    fn chunk_len(&self) -> usize {
        let target = self.target as u64;
        // Below `target`, so it fits in usize.
        usize::try_from(target - self.offset % target).unwrap_or(self.target)
    }

    fn emit(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.offset += chunk.len() as u64;
        Some(chunk)
    }

    /// Takes bytes from a frame: returns a full chunk if one is ready.
    fn absorb(&mut self, mut frame: Bytes) -> Option<Bytes> {
        let want = self.chunk_len();
        if self.buf.is_empty() && frame.len() >= want {
            let chunk = frame.split_to(want);
            if !frame.is_empty() {
                self.carry = Some(frame);
            }
            return self.emit(chunk);
        }
        let room = want - self.buf.len();
        if self.buf.is_empty() {
            // The whole chunk's room at once: growing by doubling as
            // frames arrive would copy the bytes gathered so far each time.
            self.buf.reserve(want);
        }
        if frame.len() >= room {
            self.buf.extend_from_slice(&frame.split_to(room));
            if !frame.is_empty() {
                self.carry = Some(frame);
            }
            let chunk = self.buf.split().freeze();
            return self.emit(chunk);
        }
        self.buf.extend_from_slice(&frame);
        None
    }
}

impl<S, E> Stream for Rechunker<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(frame) = this.carry.take()
                && let Some(chunk) = this.absorb(frame)
            {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.done || this.pending_error.is_some() {
                if !this.buf.is_empty() {
                    let chunk = this.buf.split().freeze();
                    return Poll::Ready(this.emit(chunk).map(Ok));
                }
                return Poll::Ready(this.pending_error.take().map(Err));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(chunk) = this.absorb(frame) {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.pending_error = Some(e);
                    this.done = true;
                }
                Poll::Ready(None) => this.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{StreamExt, executor::block_on, stream};

    fn frames(sizes: &[usize]) -> Vec<Result<Bytes, String>> {
        let mut n = 0u8;
        sizes
            .iter()
            .map(|&s| {
                let v: Vec<u8> = (0..s)
                    .map(|_| {
                        n = n.wrapping_add(1);
                        n
                    })
                    .collect();
                Ok(Bytes::from(v))
            })
            .collect()
    }

    fn collect(sizes: &[usize], target: usize) -> Vec<Result<Bytes, String>> {
        block_on(Rechunker::new(stream::iter(frames(sizes)), target).collect())
    }

    #[test]
    fn size_classes() {
        assert_eq!(chunk_size_for(None), 64 * KIB);
        assert_eq!(chunk_size_for(Some(0)), 32 * KIB);
        assert_eq!(chunk_size_for(Some(999_999)), 32 * KIB);
        assert_eq!(chunk_size_for(Some(1_000_000)), 64 * KIB);
        assert_eq!(chunk_size_for(Some(99_999_999)), 128 * KIB);
        assert_eq!(chunk_size_for(Some(100_000_000)), 256 * KIB);
        assert_eq!(chunk_size_for(Some(5 << 30)), 256 * KIB);
    }

    #[test]
    fn recuts_small_and_large_frames_preserving_bytes() {
        for sizes in [
            &[3, 3, 3, 3][..],
            &[10],
            &[1, 25, 2],
            &[8, 8],
            &[],
            &[0, 0, 5],
        ] {
            let want: Vec<u8> = frames(sizes)
                .into_iter()
                .flat_map(|f| f.unwrap().to_vec())
                .collect();
            let out = collect(sizes, 4);
            let lens: Vec<usize> = out.iter().map(|c| c.as_ref().unwrap().len()).collect();
            let got: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
            assert_eq!(got, want, "{sizes:?}");
            if let Some((last, full)) = lens.split_last() {
                assert!(full.iter().all(|&l| l == 4), "{sizes:?} -> {lens:?}");
                assert!(*last >= 1 && *last <= 4);
            }
        }
    }

    #[test]
    fn chunks_end_on_multiples_of_the_target_from_any_start() {
        let items: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from(vec![7u8; 10])),
            Ok(Bytes::from(vec![8u8; 9])),
        ];
        let out: Vec<_> = block_on(Rechunker::starting_at(stream::iter(items), 4, 6).collect());
        let lens: Vec<usize> = out.iter().map(|c| c.as_ref().unwrap().len()).collect();
        // From offset 6: 2 bytes to reach 8, then 4, 4, 4, 4, and the rest.
        assert_eq!(lens, vec![2, 4, 4, 4, 4, 1]);
    }

    #[test]
    fn changing_the_target_keeps_large_boundaries_aligned() {
        let frames = frames(&[100; 40]);
        let mut r = Rechunker::new(stream::iter(frames), 32);
        let mut offset = 0u64;
        let mut ends = Vec::new();
        block_on(async {
            while let Some(chunk) = r.next().await {
                offset += chunk.unwrap().len() as u64;
                ends.push(offset);
                // Flip between sizes as pressure would.
                let next = if ends.len() % 3 == 0 { 256 } else { 32 };
                r.set_target(next);
            }
        });
        assert_eq!(offset, 4000);
        for boundary in (1024..4000).step_by(1024) {
            assert!(
                ends.contains(&(boundary as u64)),
                "{boundary} not a chunk end: {ends:?}"
            );
        }
    }

    #[test]
    fn flushes_received_bytes_before_an_error() {
        let items: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"abcdef")),
            Err("reset".into()),
            Ok(Bytes::from_static(b"never")),
        ];
        let out: Vec<_> = block_on(Rechunker::new(stream::iter(items), 4).collect());
        assert_eq!(out[0].as_deref(), Ok(&b"abcd"[..]));
        assert_eq!(out[1].as_deref(), Ok(&b"ef"[..]));
        assert_eq!(out[2], Err("reset".to_string()));
        assert_eq!(out.len(), 3);
    }
}
