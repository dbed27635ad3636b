//! Serving connections: our own hyper loop around the poem endpoint, so the edge limits a
//! hostile client meets are ours to set. poem's `Server` gives hyper no timer (so its header
//! read timeout never fires), no header count or size bound and no way to read a peer
//! certificate; this loop does all of that in one place.
//!
//! - the request head must arrive within `header_read_timeout` and fit in `max_header_bytes`
//!   and `max_headers` (hyper answers 431 past them; HTTP/2 gets the same bounds);
//! - a connection with no traffic for `idle_timeout` is closed (a keep-alive client that
//!   went silent, or one that never sent anything after the handshake);
//! - body reads have their own deadline (`middleware::limit_body`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::listener::Acceptor;
use poem::{Endpoint, EndpointExt, IntoEndpoint};
use tokio::sync::watch;

use crate::config::HttpConfig;
use crate::http::acceptor::TlsAcceptor;

/// The limits of one connection, from the `http` config section.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl EdgeLimits {
    pub fn from_config(http: &HttpConfig) -> EdgeLimits {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
        }
    }
}

type HyperBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Serves `ep` on every connection `acceptor` yields until `stop` turns true, then lets
/// in-flight requests finish for up to `drain`.
pub async fn serve<E>(
    mut acceptor: TlsAcceptor,
    ep: E,
    limits: EdgeLimits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let ep = Arc::new(ep.into_endpoint().map_to_response());
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = acceptor.accept() => {
                let (io, local, remote, scheme) = accepted?;
                let ep = ep.clone();
                let closing = closing_rx.clone();
                connections.spawn(async move {
                    serve_connection(io, ep, local, remote, scheme, limits, closing).await;
                });
            }
        }
    }
    drop(acceptor);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("{} connections still open after the drain period; closing them", connections.len());
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection<E, Io>(
    io: Io,
    ep: Arc<E>,
    local: poem::web::LocalAddr,
    remote: poem::web::RemoteAddr,
    scheme: poem::http::uri::Scheme,
    limits: EdgeLimits,
    mut closing: watch::Receiver<bool>,
) where
    E: Endpoint<Output = poem::Response> + 'static,
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked { inner: io, activity: activity.clone() };
    let service = hyper::service::service_fn(move |req: poem::http::Request<hyper::body::Incoming>| {
        let ep = ep.clone();
        let req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
        async move {
            let resp = ep.get_response(req).await;
            Ok::<_, Infallible>(hyper::Response::<HyperBody>::from(resp))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .max_pending_accept_reset_streams(32);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let check_every = (limits.idle_timeout / 4).max(Duration::from_millis(250));
    let mut ticker = tokio::time::interval(check_every);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = closing.wait_for(|c| *c) => break,
            _ = ticker.tick() => {
                if activity.idle_for() >= limits.idle_timeout {
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    // A connection that will not finish its current exchange within the idle period is cut.
    let _ = tokio::time::timeout(limits.idle_timeout, conn).await;
}

/// When a connection last moved a byte either way.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// An IO stream that records activity on every successful read or write.
struct Tracked<Io> {
    inner: Io,
    activity: Arc<Activity>,
}

impl<Io: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<Io> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<Io: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<Io> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
