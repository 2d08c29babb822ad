//! The accept loop every test HTTP server here shares (HTTP/1.1, or TLS
//! with HTTP/2 or HTTP/1.1 by ALPN) on a bound
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
    spawn_accept(listener, on_accept, move |socket| {
        let handler = handler.clone();
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service_fn(handler))
                .await;
        }
    })
}

/// The one accept loop: `on_accept` for each new TCP connection, then
/// `serve` on its own task.
fn spawn_accept<S, F>(
    listener: TcpListener,
    on_accept: impl Fn() + Send + 'static,
    serve: S,
) -> Spawned
where
    S: Fn(tokio::net::TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    Spawned(tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            on_accept();
            tokio::spawn(serve(socket));
        }
    }))
}

/// A certificate authority made at test time, and a server certificate it
/// signed for `localhost` and `127.0.0.1`.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate, PEM (what a client is told to trust).
    pub ca_pem: String,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Result<Self, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ferry test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert: leaf.der().clone(),
            server_key_der: key.serialize_der(),
        })
    }

    /// A TLS acceptor offering HTTP/2 and HTTP/1.1 (ALPN).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}

/// Serves `handler` over TLS on `listener`, HTTP/2 or HTTP/1.1 as the
/// client negotiates; `on_accept` runs for each new TCP connection (before
/// the handshake, so a client that rejects the certificate still counts).
pub fn spawn_tls<H, Fut, B, E>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    on_accept: impl Fn() + Send + 'static,
    handler: H,
) -> Spawned
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    spawn_accept(listener, on_accept, move |socket| {
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(handler))
                    .await;
        }
    })
}
