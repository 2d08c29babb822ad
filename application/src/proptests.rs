//! Property tests of the stream transforms: any split of the input into
//! frames gives the same chunks' bytes and digests; chunks end on multiples
//! of the chunk size; the size guard never lets a byte past its limit; a
//! hash snapshot restored at any offset gives the same digest.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

use ferry_domain::ByteSize;

use crate::{Rechunker, SizeGuard, StreamHasher};

/// Splits `data` at the given cut points (taken modulo its length).
fn frames(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if data.is_empty() { 0 } else { c % data.len() })
        .collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&data[w[0]..w[1]]))
        .collect()
}

fn digest_of(data: &[u8]) -> (String, Option<String>) {
    let mut h = StreamHasher::new(true);
    h.update(data);
    let (sha, md5) = h.finalize();
    (sha.hex().to_owned(), md5.map(|m| m.hex().to_owned()))
}

proptest! {
    #[test]
    fn rechunking_and_hashing_do_not_depend_on_framing(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        target in 1usize..5_000,
    ) {
        let input = frames(&data, &cuts);
        let stream = futures::stream::iter(input.into_iter().map(Ok::<_, std::io::Error>));
        let chunks: Vec<Bytes> = futures::executor::block_on(
            Rechunker::new(stream, target).map(Result::unwrap).collect(),
        );
        let mut offset = 0usize;
        let mut hasher = StreamHasher::new(true);
        for (i, chunk) in chunks.iter().enumerate() {
            prop_assert!(!chunk.is_empty());
            offset += chunk.len();
            // Every chunk but the last ends on a multiple of the target.
            if i + 1 < chunks.len() {
                prop_assert_eq!(offset % target, 0);
            }
            hasher.update(chunk);
        }
        prop_assert_eq!(offset, data.len());
        let (sha, md5) = hasher.finalize();
        let want = digest_of(&data);
        prop_assert_eq!(sha.hex(), want.0.as_str());
        prop_assert_eq!(md5.map(|m| m.hex().to_owned()), want.1);
    }

    #[test]
    fn a_snapshot_restored_at_any_offset_gives_the_same_digest(
        data in proptest::collection::vec(any::<u8>(), 0..10_000),
        at in any::<usize>(),
    ) {
        let at = if data.is_empty() { 0 } else { at % (data.len() + 1) };
        let mut first = StreamHasher::new(true);
        first.update(&data[..at]);
        let snapshot = first.snapshot();
        prop_assert_eq!(snapshot.bytes, at as u64);
        let mut resumed = StreamHasher::restore(&snapshot).unwrap();
        resumed.update(&data[at..]);
        prop_assert_eq!(resumed.bytes(), data.len() as u64);
        let (sha, md5) = resumed.finalize();
        let want = digest_of(&data);
        prop_assert_eq!(sha.hex(), want.0.as_str());
        prop_assert_eq!(md5.map(|m| m.hex().to_owned()), want.1);
    }

    #[test]
    fn the_size_guard_never_lets_a_byte_past_its_limit(
        limit in 0u64..100_000,
        declared in proptest::option::of(0u64..100_000),
        expected in proptest::option::of(0u64..100_000),
        chunks in proptest::collection::vec(0u64..10_000, 0..40),
    ) {
        let mut guard = SizeGuard::new(ByteSize::new(limit), expected);
        if guard.declare(declared).is_err() {
            // Refused before any byte.
            return Ok(());
        }
        let mut accepted = 0u64;
        for n in chunks {
            if guard.add(n).is_err() {
                break;
            }
            accepted += n;
        }
        prop_assert!(accepted <= limit);
        if let Some(d) = declared {
            prop_assert!(accepted <= d);
        }
        if let Some(e) = expected {
            prop_assert!(accepted <= e);
        }
    }
}
