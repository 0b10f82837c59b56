//! Connections (design §7): the accept loop, with a cap on open connections, a deadline for
//! each request head, an idle timeout, and graceful shutdown.
//!
//! - At most `max_connections` TCP connections are open at once; past it the loop stops
//!   accepting until one closes (new ones wait in the kernel's listen backlog).
//! - A request head must be complete within `header_timeout` of its first byte; otherwise the
//!   client gets `408` (a problem body, `Connection: close`) and the connection is closed.
//! - A connection with nothing in flight and no bytes read or written for `idle_timeout` is
//!   closed (the time between keep-alive requests counts as idle, not as a head). On HTTP/2,
//!   where a client may send frames that are not requests (PING, SETTINGS, WINDOW_UPDATE), only
//!   requests count: no request in flight, and none started or ended and no response frame
//!   taken, for `idle_timeout`.
//!
//! hyper's own header timer cannot express this: it starts as soon as the server waits for the
//! next head, so an idle keep-alive connection would be closed after the head deadline. So each
//! connection carries a small state (`ConnState`) that its I/O and its service update and a
//! watchdog in the connection's task reads.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time from a request head's first byte to its end.
    pub header_timeout: Duration,
    /// Time a connection may carry no traffic with nothing in flight.
    pub idle_timeout: Duration,
}

/// What the watchdog of one connection reads.
struct ConnState {
    started: Instant,
    // Milliseconds since `started`, as of the last byte read or written.
    last_io_ms: AtomicU64,
    // Milliseconds since `started` (+1) at which the current request head began; 0: none.
    head_since_ms: AtomicU64,
    // Milliseconds since `started`, as of the last request that started or ended, or the last
    // response frame taken (HTTP/2's idle clock).
    last_request_ms: AtomicU64,
    // Requests whose response the service has not produced yet.
    in_flight: AtomicUsize,
    // True once the connection turned out to be HTTP/2 (no head deadline there).
    h2: AtomicBool,
    // True until the first read.
    fresh: AtomicBool,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The socket, noting reads and writes in `ConnState`.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = &buf.filled()[before..];
        if matches!(r, Poll::Ready(Ok(()))) && !got.is_empty() {
            let st = &self.state;
            let now = st.now_ms();
            st.last_io_ms.store(now, Ordering::Relaxed);
            if st.fresh.swap(false, Ordering::Relaxed) && got.starts_with(b"PRI ") {
                st.h2.store(true, Ordering::Relaxed);
            }
            if st.in_flight.load(Ordering::Relaxed) == 0 {
                // The first bytes of a new request head.
                let _ = st.head_since_ms.compare_exchange(
                    0,
                    now + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            let now = self.state.now_ms();
            self.state.last_io_ms.store(now, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            let now = self.state.now_ms();
            self.state.last_io_ms.store(now, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request in flight until its response is produced.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = self.0.now_ms();
        self.0.last_io_ms.store(now, Ordering::Relaxed);
        self.0.last_request_ms.store(now, Ordering::Relaxed);
    }
}

/// A response body that notes, on HTTP/2, each frame it hands out as request activity: a large
/// answer a slow client keeps reading is not idle, while a client that stops reading (its
/// stream's window full, so no frame is taken) is, as one that only sends PINGs is.
struct Progress {
    inner: axum::body::Body,
    state: Arc<ConnState>,
}

impl hyper::body::Body for Progress {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(Some(Ok(_)))) {
            let now = self.state.now_ms();
            self.state.last_request_ms.store(now, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why the watchdog closes a connection.
enum Expired {
    Head,
    Idle,
}

fn expired(st: &ConnState, limits: &ConnLimits) -> Option<Expired> {
    let now = st.now_ms();
    let head = st.head_since_ms.load(Ordering::Relaxed);
    let in_flight = st.in_flight.load(Ordering::Relaxed);
    let h2 = st.h2.load(Ordering::Relaxed);
    if in_flight == 0 && head != 0 && !h2 {
        if now.saturating_sub(head - 1) >= limits.header_timeout.as_millis() as u64 {
            return Some(Expired::Head);
        }
        return None;
    }
    // HTTP/2 frames that are not requests (a PING every few seconds) do not keep a
    // connection, and its slot, for ever.
    let last = if h2 {
        &st.last_request_ms
    } else {
        &st.last_io_ms
    };
    if in_flight == 0
        && now.saturating_sub(last.load(Ordering::Relaxed))
            >= limits.idle_timeout.as_millis() as u64
    {
        return Some(Expired::Idle);
    }
    None
}

/// The answer to a head that did not arrive in time, written straight to the socket.
fn request_timeout_bytes(limits: &ConnLimits) -> Vec<u8> {
    let problem = crate::problem::Problem::request_timeout(
        "request_timeout",
        format!(
            "the request head was not complete within {} ms",
            limits.header_timeout.as_millis()
        ),
    );
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        crate::problem::PROBLEM_JSON,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains open connections
/// (gracefully: in-flight requests finish) for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // A second handle on the socket, to answer 408 after hyper's connection is dropped.
        let (stream, raw) = match stream.into_std().and_then(|s| {
            let dup = s.try_clone()?;
            Ok((TcpStream::from_std(s)?, dup))
        }) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up an accepted connection");
                continue;
            }
        };
        let state = Arc::new(ConnState {
            started: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            // The first head's clock runs from the connection's start: a client that connects
            // and sends nothing is answered 408 after the head deadline too.
            head_since_ms: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
        });
        let io = TokioIo::new(Watched {
            inner: stream,
            state: state.clone(),
        });
        let svc_state = state.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let st = svc_state.clone();
            st.in_flight.fetch_add(1, Ordering::Relaxed);
            st.head_since_ms.store(0, Ordering::Relaxed);
            st.last_request_ms.store(st.now_ms(), Ordering::Relaxed);
            let body_state = st.clone();
            let guard = InFlight(st);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await;
                drop(guard);
                Ok::<_, Infallible>(match resp {
                    Ok(r) => r.map(|inner| Progress {
                        inner,
                        state: body_state,
                    }),
                    Err(never) => match never {},
                })
            }
        });
        let conn = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        let answer_408 = request_timeout_bytes(&limits);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep(tick) => {
                        match expired(&state, &limits) {
                            None => {}
                            Some(Expired::Idle) => {
                                tracing::debug!(%peer, "closing an idle connection");
                                return;
                            }
                            Some(Expired::Head) => {
                                tracing::info!(%peer, "request head timed out: 408");
                                let mut raw = raw;
                                let _ = raw.write_all(&answer_408);
                                let _ = raw.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("every connection drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("drain did not finish within the grace time; closing remaining connections");
        }
    }
}
