//! The byte stream type that flows between ports.

use std::pin::Pin;

use bytes::Bytes;
use futures_core::Stream;

/// A sendable, boxed stream of byte chunks, failing with the port's error `E`.
pub type ByteStream<E> = Pin<Box<dyn Stream<Item = Result<Bytes, E>> + Send + 'static>>;
