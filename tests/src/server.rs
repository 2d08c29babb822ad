//! The accept loop every test HTTP server here shares: HTTP/1.1 on a bound
//! listener, one task per connection, until the returned [`Spawned`] is
//! dropped.

use std::future::Future;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running accept loop; dropping it stops the server.
#[derive(Debug)]
pub struct Spawned(JoinHandle<()>);

impl Drop for Spawned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `handler` on `listener`; `on_accept` runs for each new connection.
pub fn spawn_http1<H, Fut, B, E>(
    listener: TcpListener,
    on_accept: impl Fn() + Send + 'static,
    handler: H,
) -> Spawned
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    Spawned(tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            on_accept();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service_fn(handler))
                    .await;
            });
        }
    }))
}
