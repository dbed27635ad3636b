//! The TLS acceptor: TCP plus rustls (TLS 1.2 and 1.3 only), handshakes done lazily on the
//! connection's own task so a slow or non-TLS client never stalls the accept loop.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::Addr;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor as RustlsAcceptor;

/// Builds a rustls server config for a certificate chain and its PKCS#8 key.
pub fn server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our cipher suite order (AEADs with forward secrecy, strongest first) wins over the client's.
    config.ignore_client_order = true;
    Ok(config)
}

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct TlsAcceptor {
    listener: TcpListener,
    local: LocalAddr,
    tls: RustlsAcceptor,
    last_warning: Option<std::time::Instant>,
}

impl TlsAcceptor {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsAcceptor> {
        let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
        Ok(TlsAcceptor { listener, local, tls: RustlsAcceptor::from(config), last_warning: None })
    }
}

impl Acceptor for TlsAcceptor {
    type Io = LazyTls;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local.clone()]
    }

    async fn accept(&mut self) -> io::Result<(LazyTls, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.tls.accept(stream)).map(|r| {
                        r.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")))
                    });
                    let io = LazyTls { state: TlsState::Handshaking(handshake.boxed()), peer: Default::default() };
                    return Ok((
                        io,
                        self.local.clone(),
                        RemoteAddr(Addr::SocketAddr(remote)),
                        poem::http::uri::Scheme::HTTPS,
                    ));
                }
                // A connection that failed before accept (reset, fd pressure) must not end the
                // server; under pressure the warning is written once a second at most.
                Err(e) => {
                    let now = std::time::Instant::now();
                    if self.last_warning.is_none_or(|at| now.duration_since(at).as_secs() >= 1) {
                        tracing::warn!("accept failed: {e}");
                        self.last_warning = Some(now);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }
}

/// The certificate chain a client presented, known once its handshake is done.
pub type PeerCertificates = Arc<std::sync::OnceLock<Arc<[CertificateDer<'static>]>>>;

/// A connection that may know its client's certificate (only a TLS one that asked for it).
pub trait PeerIdentity {
    fn peer_certificates(&self) -> Option<PeerCertificates> {
        None
    }
}

impl PeerIdentity for TcpStream {}

/// A TLS stream whose handshake completes on first use.
pub struct LazyTls {
    state: TlsState,
    peer: PeerCertificates,
}

enum TlsState {
    Handshaking(BoxFuture<'static, io::Result<TlsStream<TcpStream>>>),
    Ready(Box<TlsStream<TcpStream>>),
    Failed,
}

impl PeerIdentity for LazyTls {
    fn peer_certificates(&self) -> Option<PeerCertificates> {
        Some(self.peer.clone())
    }
}

impl LazyTls {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let TlsState::Handshaking(fut) = &mut self.state {
            match fut.poll_unpin(cx) {
                Poll::Ready(Ok(s)) => {
                    if let Some(certs) = s.get_ref().1.peer_certificates() {
                        let _ = self.peer.set(certs.iter().map(|c| c.clone().into_owned()).collect());
                    }
                    self.state = TlsState::Ready(Box::new(s));
                }
                Poll::Ready(Err(e)) => {
                    self.state = TlsState::Failed;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match &mut self.state {
            TlsState::Ready(s) => Poll::Ready(Ok(s)),
            _ => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake failed"))),
        }
    }
}

impl AsyncRead for LazyTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for LazyTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(s)) => Pin::new(s).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            TlsState::Ready(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}
