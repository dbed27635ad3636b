//! Serving connections: our own hyper loop around the poem endpoint, so the edge limits a
//! hostile client meets are ours to set. poem's `Server` gives hyper no timer (so its header
//! read timeout never fires), no header count or size bound and no way to read a peer
//! certificate; this loop does all of that in one place.
//!
//! - the request head must arrive within `header_read_timeout` and fit in `max_header_bytes`
//!   and `max_headers` (hyper answers 431 past them; HTTP/2 gets the same bounds);
//! - a connection with no request in progress for `idle_timeout` is closed (a keep-alive
//!   client that went silent, one that never sent a request, an HTTP/2 client sending only
//!   pings);
//! - at most `max_connections` connections are open, and `max_connections_per_source` from one
//!   address; past that a new connection is closed as soon as it is accepted;
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
use crate::http::acceptor::PeerIdentity;

/// The certificate chain the client presented on this request's connection (mutual TLS).
#[derive(Clone)]
pub struct ClientCertificates(pub Arc<[rustls::pki_types::CertificateDer<'static>]>);

/// The limits of one connection, from the `http` config section.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl EdgeLimits {
    pub fn from_config(http: &HttpConfig) -> EdgeLimits {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            max_connections: http.max_connections,
            max_connections_per_source: http.max_connections_per_source,
        }
    }

    /// The management listener's: the same deadlines and header bounds, and a few
    /// connections (a scraper and probes need no more).
    pub fn for_management(http: &HttpConfig) -> EdgeLimits {
        EdgeLimits {
            max_connections: MANAGEMENT_CONNECTIONS.min(http.max_connections),
            // One scraper cannot hold every slot and starve the probes.
            max_connections_per_source: MANAGEMENT_PER_SOURCE.min(http.max_connections_per_source),
            ..EdgeLimits::from_config(http)
        }
    }
}

/// Connections the management listener keeps open at most, in all and per source address.
const MANAGEMENT_CONNECTIONS: usize = 64;
const MANAGEMENT_PER_SOURCE: usize = 16;

/// Resolves once `flag` is true (or its sender is gone). The watch guard stays inside, so the
/// futures selecting on this remain `Send`.
async fn turned_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|on| *on).await;
}

type HyperBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Serves `ep` on every connection `acceptor` yields until `stop` turns true, then lets
/// in-flight requests finish for up to `drain`.
pub async fn serve<A, E>(
    mut acceptor: A,
    ep: E,
    limits: EdgeLimits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<()>
where
    A: Acceptor,
    A::Io: PeerIdentity,
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let ep = Arc::new(ep.into_endpoint().map_to_response());
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let open = Arc::new(OpenConnections::default());
    loop {
        tokio::select! {
            _ = turned_true(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = acceptor.accept() => {
                let (io, local, remote, scheme) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: wait a little rather than stop serving.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let source = remote.as_socket_addr().map(|a| a.ip());
                // Over a bound, the connection is dropped before its handshake: it costs us
                // nothing but the accept.
                let Some(slot) = open.take(source, &limits) else { continue };
                let ep = ep.clone();
                let closing = closing_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
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
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + PeerIdentity + Send + Unpin + 'static,
{
    let activity = Arc::new(Activity::new());
    // Filled when the TLS handshake completes, before the first request is read.
    let peer = io.peer_certificates();
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |req: poem::http::Request<hyper::body::Incoming>| {
            let ep = ep.clone();
            let mut req = poem::Request::from((req, local.clone(), remote.clone(), scheme.clone()));
            if let Some(certs) = peer.as_ref().and_then(|p| p.get()) {
                req.extensions_mut().insert(ClientCertificates(certs.clone()));
            }
            let activity = activity.clone();
            async move {
                let _request = activity.begin();
                let resp = ep.get_response(req).await;
                Ok::<_, Infallible>(hyper::Response::<HyperBody>::from(resp))
            }
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
            _ = turned_true(&mut closing) => break,
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

/// Requests in progress on a connection, and when the last one began or ended: a connection
/// is idle only while none is in progress.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

/// One request in progress; ends it when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicU64::new(0) }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Connections open now, in all and per source address (only sources with one open are
/// kept, so the map is bounded by `max_connections`).
#[derive(Default)]
struct OpenConnections {
    counts: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// A connection's place in [`OpenConnections`]; given back when dropped.
struct Slot {
    open: Arc<OpenConnections>,
    source: Option<std::net::IpAddr>,
}

impl OpenConnections {
    fn take(self: &Arc<Self>, source: Option<std::net::IpAddr>, limits: &EdgeLimits) -> Option<Slot> {
        let mut guard = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *guard;
        if *total >= limits.max_connections {
            return None;
        }
        if let Some(ip) = source {
            let n = per_source.entry(ip).or_insert(0);
            if *n >= limits.max_connections_per_source {
                return None;
            }
            *n += 1;
        }
        *total += 1;
        Some(Slot { open: self.clone(), source })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.open.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(ip) = self.source {
            if let Some(n) = per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_source.remove(&ip);
                }
            }
        }
    }
}
