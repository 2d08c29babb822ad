//! An HTTP body fed chunk by chunk through a bounded channel, so a part's
//! bytes go out as they arrive from the source without being buffered.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// The receiving end: the request body the SDK sends.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    len: u64,
}

/// Creates a body of exactly `len` bytes and the sender that feeds it.
/// `depth` chunks may wait in the channel (backpressure beyond that).
pub fn channel_body(
    len: u64,
    depth: usize,
) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    (tx, ChannelBody { rx, len })
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
