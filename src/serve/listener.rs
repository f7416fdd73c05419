//! The accept loop: plain TCP or TLS (rustls, hot-reloaded), HTTP/1.1 and HTTP/2, a connection
//! limit, a header-read timeout, an HTTP/2 idle timeout and keep-alive pings, a floor under how
//! fast clients take answers, and a graceful drain with a deadline on SIGTERM/SIGINT.
//!
//! Hand-built on hyper-util rather than `axum::serve` because the latter offers none of the
//! limits an endpoint facing the internet needs (slow-loris headers, connection floods) nor a
//! bounded drain for rolling restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::h2_idle::{self, Streams, Tracked};
use super::send_floor::{Floored, SendFloor};
use super::AppState;

/// Listener limits and timeouts.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub max_connections: usize,
    /// Serving threads, each with its own runtime (default: one per core).
    pub workers: usize,
    /// Time a client has to send a request's headers (HTTP/1.1).
    pub header_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed.
    pub http2_idle_timeout: Duration,
    /// How often an HTTP/2 connection that has been quiet is pinged (`None`: never), and how
    /// long the answer may take before the connection is closed.
    pub http2_keep_alive_interval: Option<Duration>,
    pub http2_keep_alive_timeout: Duration,
    /// How fast a client must take the answers it keeps waiting (`None`: no floor).
    pub send_floor: Option<SendFloor>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsFiles>,
}

/// PEM certificate chain and private key, re-read when they change or on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The current TLS configuration; swapped on reload, read by each new connection.
struct TlsState {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
    loaded: RwLock<Option<(SystemTime, SystemTime)>>,
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_tls(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read TLS certificate {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read TLS private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl TlsState {
    fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let acceptor = load_tls(&files)?;
        let loaded = (mtime(&files.cert), mtime(&files.key));
        Ok(TlsState {
            acceptor: RwLock::new(acceptor),
            loaded: RwLock::new(loaded.0.zip(loaded.1)),
            files,
        })
    }

    /// Reloads when forced or when either file changed; a bad new pair keeps the old one.
    fn maybe_reload(&self, force: bool) {
        let now = mtime(&self.files.cert).zip(mtime(&self.files.key));
        if !force && now == *self.loaded.read().expect("lock") {
            return;
        }
        match load_tls(&self.files) {
            Ok(a) => {
                *self.acceptor.write().expect("lock") = a;
                *self.loaded.write().expect("lock") = now;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificate")
            }
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().expect("lock").clone()
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// What every serving thread and connection shares: the limits, TLS, the application.
struct Shared {
    state: Arc<AppState>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
    tls: Option<Arc<TlsState>>,
    header_timeout: Duration,
    http2_idle_timeout: Duration,
    send_floor: Option<SendFloor>,
}

/// Serves until a shutdown signal, then stops accepting and drains.
///
/// Requests are served by `cfg.workers` threads, each running its own single-threaded runtime
/// and accepting from the same socket, as nginx's workers do: a connection and every request on
/// it stay on one thread, with no cross-thread wake-ups (a third less CPU per redirect than
/// tokio's work-stealing scheduler, docs/performance.md). The caller's runtime keeps the
/// background work: signals, TLS reloads, health checks.
pub async fn serve(
    listen: SocketAddr,
    state: Arc<AppState>,
    cfg: ListenerConfig,
) -> anyhow::Result<()> {
    // Bound by tokio for its socket options (SO_REUSEADDR: restarts do not wait for TIME_WAIT),
    // then handed to the serving threads.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?
        .into_std()?;
    let tls = cfg
        .tls
        .clone()
        .map(TlsState::new)
        .transpose()?
        .map(Arc::new);
    if let Some(tls) = &tls {
        spawn_tls_reloader(tls.clone());
    }
    let workers = cfg.workers.max(1);
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        max_connections = cfg.max_connections,
        workers,
        "serving"
    );

    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(true)
        // A client that shuts its sending side after the request still gets the answer;
        // hyper's default takes that for an abort. It also spares hyper a read while each
        // request is in flight, which cost every request not answered at once a fresh 8 KiB
        // read buffer (docs/performance.md). Requests end within `request_timeout` regardless.
        .half_close(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(cfg.http2_keep_alive_interval)
        .keep_alive_timeout(cfg.http2_keep_alive_timeout);
    let shared = Arc::new(Shared {
        state,
        http1,
        http2,
        permits: Arc::new(Semaphore::new(cfg.max_connections)),
        tls,
        header_timeout: cfg.header_timeout,
        http2_idle_timeout: cfg.http2_idle_timeout,
        send_floor: cfg.send_floor,
    });
    let graceful = Arc::new(GracefulShutdown::new());
    // `stop` ends the accept loops; `done` ends the serving threads once the drain is over.
    let (stop, _) = tokio::sync::watch::channel(false);
    let (done, _) = tokio::sync::watch::channel(false);
    // Closed once every serving thread has dropped its sender, i.e. stopped accepting.
    let (stopped_tx, mut stopped_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a serving runtime")?;
        let (shared, graceful) = (shared.clone(), graceful.clone());
        // Each thread owns a descriptor of the socket, closed when its accept loop ends: once
        // all have, the port refuses connections (connections hold `shared`, not the socket).
        let socket = listener
            .try_clone()
            .context("cannot share the listening socket")?;
        let (mut stop, mut done) = (stop.subscribe(), done.subscribe());
        let stopped = stopped_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    let accepted = accept_loop(socket, &shared, &graceful, &mut stop).await;
                    if let Err(e) = accepted {
                        tracing::error!(error = %format!("{e:#}"), "serving thread failed");
                    }
                    // Let go of the drain handle before the drain starts.
                    drop((shared, graceful, stopped));
                    let _ = done.wait_for(|d| *d).await;
                })
            })
            .context("cannot start a serving thread")?;
        threads.push(thread);
    }
    drop((stopped_tx, listener));

    shutdown_signal().await;
    let _ = stop.send(true);
    // Every accept loop has closed its socket descriptor when the channel closes.
    let _ = stopped_rx.recv().await;
    drop(shared);
    let graceful = Arc::into_inner(graceful).expect("serving threads let go of the drain");
    tracing::info!(
        in_flight_connections = graceful.count(),
        deadline_secs = cfg.shutdown_timeout.as_secs(),
        "shutting down: no longer accepting, draining in-flight requests"
    );
    match tokio::time::timeout(cfg.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!("drain deadline reached; closing remaining connections"),
    }
    let _ = done.send(true);
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
}

/// One serving thread's accept loop, until `stop` turns true.
async fn accept_loop(
    socket: std::net::TcpListener,
    shared: &Arc<Shared>,
    graceful: &GracefulShutdown,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(socket)?;
    let stop_for_connections = stop.clone();
    let stopping = stop.wait_for(|s| *s);
    tokio::pin!(stopping);
    loop {
        // Wait for a free connection slot first, so a flood queues in the kernel backlog
        // instead of costing memory here.
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = &mut stopping => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopping => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let shared = shared.clone();
        let mut drain = stop_for_connections.clone();
        match shared.tls.as_ref().map(|t| t.acceptor()) {
            None => {
                // A connection that has sent nothing yet is not hyper's: the drain closes it here.
                tokio::spawn(async move {
                    let sniffed = tokio::select! {
                        s = tokio::time::timeout(shared.header_timeout, sniff(&stream)) => s,
                        _ = drain.wait_for(|s| *s) => Ok(None),
                    };
                    if let Ok(Some(protocol)) = sniffed {
                        let io = Floored::new(stream, shared.send_floor);
                        let conn = Connection { io, protocol, peer };
                        serve_connection(&shared, conn, watcher, drain).await;
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let io = Floored::new(stream, shared.send_floor);
                    let accepted =
                        tokio::time::timeout(shared.header_timeout, acceptor.accept(io)).await;
                    if let Ok(Ok(io)) = accepted {
                        let protocol = match io.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Protocol::Http2,
                            _ => Protocol::Http1,
                        };
                        let conn = Connection { io, protocol, peer };
                        serve_connection(&shared, conn, watcher, drain).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// HTTP/2: negotiated by ALPN over TLS, or with prior knowledge (h2c) in the clear.
    Http2,
}

/// The HTTP/2 connection preface a prior-knowledge (h2c) client opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/1 from h2c by peeking at a cleartext connection's first bytes, before any buffer
/// is allocated for it. hyper-util's `auto` builder reads them instead and hands hyper the
/// connection behind a re-play wrapper: hyper's read buffer then holds the 24 sniffed bytes when
/// it first reserves, and doubles to 16 KiB for every connection (docs/performance.md). `None`
/// when the client closes first.
async fn sniff(stream: &tokio::net::TcpStream) -> Option<Protocol> {
    let mut head = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut head).await.ok()?;
        if n == 0 {
            return None;
        }
        if head[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // Part of the preface so far: a peek would see the same bytes again at once.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An accepted connection, ready for hyper.
struct Connection<I> {
    io: I,
    protocol: Protocol,
    /// The client's address (the balancer's, behind one).
    peer: SocketAddr,
}

/// The application as hyper calls it. No route reads a body (writes are refused), and an empty
/// one costs no allocation. The peer is passed along, not put in the request's extensions: that
/// map costs two allocations.
fn app(
    state: &Arc<AppState>,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> super::Answer {
    super::dispatch(state, req.map(|_| axum::body::Body::empty()), Some(peer))
}

/// Serves one connection with hyper until it closes or the drain ends it.
async fn serve_connection<I>(
    shared: &Shared,
    conn: Connection<I>,
    watcher: Watcher,
    mut drain: tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::FutureExt;
    let Connection { io, protocol, peer } = conn;
    let io = TokioIo::new(io);
    let state = shared.state.clone();
    match protocol {
        Protocol::Http1 => {
            let service = hyper::service::service_fn(move |req| {
                app(&state, req, peer).map(Ok::<_, std::convert::Infallible>)
            });
            let _ = watcher
                .watch(shared.http1.serve_connection(io, service))
                .await;
        }
        Protocol::Http2 => {
            // Each stream is counted open until its answer's body is dropped.
            let (streams, open) = Streams::new();
            let stall = match shared.send_floor {
                Some(floor) => h2_idle::stalled(streams.clone(), open.clone(), floor).left_future(),
                None => std::future::pending().right_future(),
            };
            let service = hyper::service::service_fn(move |req| {
                let stream = streams.open();
                app(&state, req, peer).map(|resp| {
                    Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, stream)))
                })
            });
            let conn = shared.http2.serve_connection(io, service);
            tokio::pin!(conn, stall);
            let idle = shared.http2_idle_timeout;
            // Closed gracefully (GOAWAY, open streams finish) when idle or on the drain; the
            // watcher is held until then, so the drain waits for this connection.
            let closing = tokio::select! {
                _ = conn.as_mut() => return,
                _ = h2_idle::idle_for(open.clone(), idle) => "idle",
                _ = drain.wait_for(|s| *s) => "drain",
                _ = &mut stall => {
                    // The client is not taking its answers: no use waiting for it to close.
                    tracing::debug!(%peer, "dropping a stalled HTTP/2 connection");
                    return;
                }
            };
            tracing::debug!(%peer, reason = closing, "closing an HTTP/2 connection");
            conn.as_mut().graceful_shutdown();
            // hyper's close waits for the client to answer a ping; one that never does is
            // dropped once idle again, and a stalled one as above.
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = h2_idle::idle_for(open, idle) => {}
                _ = &mut stall => {}
            }
            drop(watcher);
        }
    }
}

fn spawn_tls_reloader(tls: Arc<TlsState>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; TLS reloads on file change only");
            return;
        }
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                _ = hup.recv() => true,
            };
            tls.maybe_reload(force);
        }
    });
}
