//! What stands between the network and the handlers: the client address (and when to believe
//! `X-Forwarded-For`), per-endpoint rate limits (tower_governor), load shedding with a global
//! concurrency limit and a request timeout (tower), and security headers (tower-http).
//!
//! Every refusal is an RFC 9457 problem with a stable code and, where waiting helps,
//! `Retry-After`: 429 `rate_limited`, 503 `overloaded`, 503 `timeout`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::BoxError;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use ipnet::IpNet;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::problem::Problem;
use crate::state::AppState;

/// Finds the client's address: the TCP peer, unless the peer is a trusted proxy, in which case
/// the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Arc<Vec<IpNet>>,
}

impl ClientIp {
    /// Trusts `proxies` to name the client.
    pub fn new(proxies: Vec<IpNet>) -> ClientIp {
        ClientIp {
            trusted: Arc::new(proxies),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of `req` (unspecified when the request did not come over TCP, as in
    /// in-process tests).
    pub fn of<T>(&self, req: &Request<T>) -> IpAddr {
        let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        };
        let peer = peer.ip().to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let entries: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // An entry we cannot read: stop at the last address we could.
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(self.of(req))
    }
}

/// The 429 answer to a rate-limited request.
fn rate_limited(e: GovernorError) -> Response {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let wait = wait_time.max(1);
            let mut resp = Problem::too_many_requests(
                "rate_limited",
                format!("too many requests from this client; retry in {wait} s"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            resp
        }
        other => {
            tracing::error!(error = %other, "rate limiter failed");
            Problem::internal().into_response()
        }
    }
}

/// Forgets idle clients of one limiter; false once the limiter is gone.
type Sweep = Box<dyn Fn() -> bool + Send>;

/// Rate limiters in use, so one thread can forget idle clients.
#[derive(Default, Clone)]
pub struct Limiters {
    sweeps: Arc<std::sync::Mutex<Vec<Sweep>>>,
}

impl Limiters {
    /// Wraps `route` in a per-client limit of `per_sec` requests per second (burst: one
    /// second's worth); `per_sec == 0` leaves it unlimited.
    pub fn limit(
        &self,
        route: MethodRouter<AppState>,
        per_sec: u32,
        ip: &ClientIp,
    ) -> MethodRouter<AppState> {
        if per_sec == 0 {
            return route;
        }
        let period_ns = (1_000_000_000u64 / u64::from(per_sec)).max(1);
        let Some(config) = GovernorConfigBuilder::default()
            .key_extractor(ip.clone())
            .per_nanosecond(period_ns)
            .burst_size(per_sec)
            .finish()
        else {
            return route;
        };
        let config = Arc::new(config);
        let weak: Weak<GovernorConfig<ClientIp, _>> = Arc::downgrade(&config);
        if let Ok(mut v) = self.sweeps.lock() {
            v.push(Box::new(move || match weak.upgrade() {
                Some(c) => {
                    c.limiter().retain_recent();
                    true
                }
                None => false,
            }));
        }
        route.layer(tower_governor::GovernorLayer::new(config).error_handler(rate_limited))
    }

    /// Starts a thread that drops idle clients' state every `every`; it ends when every limiter
    /// is gone.
    pub fn start_cleanup(&self, every: Duration) {
        let sweeps = self.sweeps.clone();
        let spawned = std::thread::Builder::new()
            .name("stemedb-ratelimit-gc".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Ok(mut v) = sweeps.lock() else { return };
                    v.retain(|sweep| sweep());
                    if v.is_empty() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the rate-limit cleanup thread");
        }
    }
}

/// Refuses with 413 a request whose `Content-Length` already says its body is past the route's
/// `limit`, before a byte of the body is read (and so before `100 Continue` is sent): the
/// body limit's own check only trips once that many bytes have arrived.
pub(crate) async fn declared_length(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return crate::problem::body_too_large(limit).into_response();
    }
    next.run(req).await
}

/// The answer when the concurrency limit sheds a request or the timeout fires.
pub async fn overloaded(err: BoxError) -> Response {
    let (code, detail) = if err.is::<tower::timeout::error::Elapsed>() {
        (
            "timeout",
            "the request took longer than the server's request timeout; a write may still have \
             been applied (writes are idempotent: retry)",
        )
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        (
            "overloaded",
            "the server is at its concurrency limit; retry shortly",
        )
    } else {
        tracing::error!(error = %err, "middleware failed");
        return Problem::internal().into_response();
    };
    let mut resp = Problem::unavailable(code, detail).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Headers on every response (unless a handler set its own).
pub fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, xff: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri("/");
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let mut r = b.body(()).expect("request");
        let addr: SocketAddr = peer.parse().expect("addr");
        r.extensions_mut().insert(ConnectInfo(addr));
        r
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let ip = ClientIp::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]);
        let cases: &[(&str, &[&str], &str)] = &[
            // Untrusted peer: the header is ignored.
            ("203.0.113.9:5", &["1.2.3.4"], "203.0.113.9"),
            // Trusted peer: the rightmost untrusted entry.
            ("10.1.1.1:5", &["1.2.3.4"], "1.2.3.4"),
            ("10.1.1.1:5", &["6.6.6.6, 1.2.3.4, 10.9.9.9"], "1.2.3.4"),
            ("10.1.1.1:5", &["6.6.6.6", "1.2.3.4"], "1.2.3.4"),
            ("[::1]:5", &["2001:db8::1"], "2001:db8::1"),
            // Every entry trusted: the leftmost.
            ("10.1.1.1:5", &["10.2.2.2, 10.3.3.3"], "10.2.2.2"),
            // Garbage stops the walk at the last readable address.
            ("10.1.1.1:5", &["1.2.3.4, garbage"], "10.1.1.1"),
            ("10.1.1.1:5", &[], "10.1.1.1"),
            // IPv4-mapped IPv6 peers are IPv4.
            ("[::ffff:10.1.1.1]:5", &["1.2.3.4"], "1.2.3.4"),
        ];
        for (peer, xff, want) in cases {
            assert_eq!(
                ip.of(&req(peer, xff)).to_string(),
                *want,
                "peer {peer} xff {xff:?}"
            );
        }
        let none = ClientIp::default();
        assert_eq!(
            none.of(&req("10.1.1.1:5", &["1.2.3.4"])).to_string(),
            "10.1.1.1"
        );
    }
}
