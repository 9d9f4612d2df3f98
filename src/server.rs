//! The network edge: binds the listening socket, accepts TCP connections (at most
//! `Limits::max_connections` at once), runs hyper's HTTP/1.1 on each with `http::handle`, and shuts
//! down gracefully: stop accepting, let in-flight requests finish, wait up to
//! `Limits::shutdown_grace` for connections to close. With `--tls-cert` each connection first
//! completes a TLS handshake (`tls`). At start, `raise_fd_limit` lifts the process's open-file
//! soft limit so that many connections fit (every connection is a file descriptor).
//!
//! It calls `http` and nothing below it; it never touches the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};

use crate::app::App;
use crate::http;

/// Raises this process's open-file soft limit towards `want` (at most the hard limit): every
/// connection is a file descriptor, and a shell's default soft limit (often 1,024) would cap
/// the server far below `--max-connections`. Returns (soft limit now, hard limit).
pub fn raise_fd_limit(want: u64) -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.unwrap_or(u64::MAX);
    let soft = now.current.unwrap_or(u64::MAX);
    let target = want.min(hard);
    if target > soft
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: now.maximum,
            },
        )
        .is_ok()
    {
        return (target, hard);
    }
    (soft, hard)
}

/// Connections the kernel completes and queues for `accept` (it caps this at
/// `net.core.somaxconn`, 4,096 by default). std and tokio ask for 128: when everyone reconnects
/// after a restart, a queue that short overflows while the accept task waits for a worker, and
/// each handshake the kernel drops that way costs its client a 1 s retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket (backlog `LISTEN_BACKLOG`), turning the usual failures into one
/// clear sentence.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {addr}: the address is already in use (is chatd or another program already running on port {}?)",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot listen on {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {addr}: no network interface has that address")
        }
        _ => format!("cannot listen on {addr}: {e}"),
    })
}

/// Serves connections from `listener` until `shutdown` completes, then drains.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let limits = app.config.limits.clone();
    // Each connection holds one permit until it is closed; shutdown waits to get them all back.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning; existing
                    // connections keep working.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Chat frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let permit = (permit, ConnectionGauge::new(&app));
        match app.config.tls.as_ref().map(|t| t.acceptor()) {
            None => {
                tokio::spawn(async move {
                    let _permit = permit;
                    serve_connection(stream, peer, app, stop).await;
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    // The handshake gets the same deadline as a request head.
                    let timeout = app.config.limits.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, peer, app, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }

    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    let _ = stop_tx.send(true);
    // WebSocket sessions outlive their HTTP connection: tell them (close 1001) and wait too.
    app.begin_shutdown();
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let sessions = app.sessions.clone();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        let a = permits.acquire_many(all).await;
        let b = sessions.acquire_many(all).await;
        (a, b)
    })
    .await;
    match drained {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            "some connections were still open after {:?}; closing them",
            limits.shutdown_grace
        ),
    }
}

/// Answers every connection with `http::handle_starting` (503 `starting`) until `ready`
/// fires, then hands the listener back for `run`: the server is reachable, and `/healthz`
/// says why it is not ready, while the store opens (replaying the log after a crash).
pub async fn serve_starting(
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    header_timeout: Duration,
    ready: tokio::sync::oneshot::Receiver<()>,
) -> TcpListener {
    tokio::pin!(ready);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut ready => return listener,
        };
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let serve = |io| async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(io), service_fn(http::handle_starting));
                let _ = tokio::time::timeout(header_timeout, conn).await;
            };
            match acceptor {
                None => serve(Box::new(stream) as Box<dyn Io>).await,
                Some(a) => match tokio::time::timeout(header_timeout, a.accept(stream)).await {
                    Ok(Ok(tls)) => serve(Box::new(tls) as Box<dyn Io>).await,
                    _ => tracing::debug!(%peer, "TLS handshake failed while starting"),
                },
            }
        });
    }
}

/// A plain or TLS stream.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Counts an open TCP connection in `chatd_http_connections` for as long as it lives.
struct ConnectionGauge(Arc<crate::metrics::Metrics>);

impl ConnectionGauge {
    fn new(app: &App) -> ConnectionGauge {
        app.metrics.http_connections.fetch_add(1, Relaxed);
        ConnectionGauge(app.metrics.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.http_connections.fetch_sub(1, Relaxed);
    }
}

/// Runs HTTP/1.1 (with upgrades, for WebSockets) on one accepted connection, plain or TLS, until
/// it ends or the server stops.
pub(crate) async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = app.config.limits.header_read_timeout;
    let max_buf = app.config.limits.max_header_bytes;
    let svc = service_fn(move |req| http::serve(app.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections the kernel completes before the server gets to `accept` them: with the
    /// usual backlog of 128 the 129th handshake would be dropped (and retried a second later).
    #[tokio::test]
    async fn the_listen_queue_holds_a_reconnect_burst() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The kernel caps the backlog at net.core.somaxconn (4,096 on current kernels).
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let want = 400.min(cap);
        let mut held = Vec::new();
        for i in 0..want {
            let c = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            match c {
                Ok(Ok(s)) => held.push(s),
                _ => panic!("handshake {i} dropped with {i} waiting to be accepted"),
            }
        }
        // Each of them is really queued for accept.
        for _ in 0..want {
            tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("queued connection")
                .expect("accept");
        }
    }
}
