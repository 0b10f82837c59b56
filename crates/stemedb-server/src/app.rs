//! The axum application: routes, shared state, the middleware stack, request metrics and the
//! access log.
//!
//! Layers, outermost first: one pass (`track`) that sets the request id (from `X-Request-Id` or
//! made up, echoed on the response), adds the security headers and records metrics and the
//! access log; then on the `/v1` data routes load shedding with a global concurrency limit and a
//! timeout, then per-route rate limits and body limits. Health, readiness, metrics and the
//! OpenAPI document skip the limits, so probes and scrapes still answer when the server is
//! saturated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower::ServiceBuilder;
use tracing::Instrument as _;

pub use crate::defense::AgentWeights;
use crate::hardening::{self, ClientIp, Limiters};
use crate::problem::Problem;
pub use crate::state::{AppState, Limits};
use crate::verifier::Verifier;
use crate::{admin, api, dashboard, query};

/// The OpenAPI document of every route (`GET /v1/openapi.json`).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Every route: (method, path template). The OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/assets/{file}"),
    ("POST", "/v1/assert"),
    ("GET", "/v1/assertions/{id}"),
    ("GET", "/v1/query"),
    ("POST", "/v1/query"),
    ("GET", "/v1/history"),
    ("GET", "/v1/checkpoint"),
    ("GET", "/v1/checkpoint/key"),
    ("GET", "/v1/proof/inclusion"),
    ("GET", "/v1/proof/consistency"),
    ("GET", "/v1/health"),
    ("GET", "/v1/ready"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/v1/admin/quarantine"),
    ("GET", "/v1/admin/quarantine/{id}"),
    ("POST", "/v1/admin/quarantine/{id}/release"),
    ("POST", "/v1/admin/quarantine/{id}/reject"),
    ("GET", "/v1/admin/breakers"),
    ("GET", "/v1/admin/agents"),
    ("GET", "/v1/admin/agents/{pubkey}"),
    ("PUT", "/v1/admin/agents/{pubkey}"),
    ("DELETE", "/v1/admin/agents/{pubkey}"),
    ("GET", "/v1/admin/audit"),
];

/// `/v1/admin/…`, each route behind the bearer-token check and the read rate limit.
fn admin_routes(
    state: &AppState,
    limiters: &Limiters,
    rate: u32,
    ip: &ClientIp,
) -> Router<AppState> {
    let body = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            admin::ADMIN_BODY_LIMIT_BYTES,
            hardening::declared_length,
        ))
        .layer(DefaultBodyLimit::max(admin::ADMIN_BODY_LIMIT_BYTES));
    Router::new()
        .route(
            "/v1/admin/quarantine",
            limiters.limit(get(admin::quarantine_list), rate, ip),
        )
        .route(
            "/v1/admin/quarantine/{id}",
            limiters.limit(get(admin::quarantine_get), rate, ip),
        )
        .route(
            "/v1/admin/quarantine/{id}/release",
            limiters.limit(post(admin::release).layer(body.clone()), rate, ip),
        )
        .route(
            "/v1/admin/quarantine/{id}/reject",
            limiters.limit(post(admin::reject).layer(body.clone()), rate, ip),
        )
        .route(
            "/v1/admin/breakers",
            limiters.limit(get(admin::breakers), rate, ip),
        )
        .route(
            "/v1/admin/agents",
            limiters.limit(get(admin::agents), rate, ip),
        )
        .route(
            "/v1/admin/agents/{pubkey}",
            limiters.limit(
                get(admin::agent_get)
                    .put(admin::agent_put)
                    .delete(admin::agent_delete)
                    .layer(body.clone()),
                rate,
                ip,
            ),
        )
        .route(
            "/v1/admin/audit",
            limiters.limit(get(admin::audit), rate, ip),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), admin::auth))
}

/// The router with every route and middleware, ready for `axum::serve` (with connect info, so
/// rate limits see client addresses) or `oneshot` in tests.
pub fn app(state: AppState) -> Router {
    let limits = state.limits().clone();
    // The verifier stage for small writes: its thread starts on the first write and ends when
    // the router is dropped.
    let stage = Arc::new(Verifier::new(&state));
    let ip = ClientIp::new(limits.trusted_proxies.clone());
    let limiters = Limiters::default();
    let rates = limits.rates;
    let data = Router::new()
        .route(
            "/v1/assert",
            limiters.limit(
                post(api::assert).layer(
                    ServiceBuilder::new()
                        .layer(axum::Extension(stage))
                        .layer(middleware::from_fn_with_state(
                            limits.batch_body,
                            hardening::declared_length,
                        ))
                        .layer(DefaultBodyLimit::max(limits.batch_body)),
                ),
                rates.write_per_sec,
                &ip,
            ),
        )
        .route(
            "/v1/query",
            limiters.limit(
                get(query::get).post(query::post).layer(
                    ServiceBuilder::new()
                        .layer(middleware::from_fn_with_state(
                            query::QUERY_BODY_LIMIT_BYTES,
                            hardening::declared_length,
                        ))
                        .layer(DefaultBodyLimit::max(query::QUERY_BODY_LIMIT_BYTES)),
                ),
                rates.query_per_sec,
                &ip,
            ),
        )
        .route(
            "/v1/history",
            limiters.limit(get(query::history), rates.query_per_sec, &ip),
        )
        .route(
            "/v1/assertions/{id}",
            limiters.limit(get(api::get_assertion), rates.read_per_sec, &ip),
        )
        .route(
            "/v1/checkpoint",
            limiters.limit(get(api::checkpoint), rates.read_per_sec, &ip),
        )
        .route(
            "/v1/checkpoint/key",
            limiters.limit(get(api::checkpoint_key), rates.read_per_sec, &ip),
        )
        .route(
            "/v1/proof/inclusion",
            limiters.limit(get(api::inclusion), rates.read_per_sec, &ip),
        )
        .route(
            "/v1/proof/consistency",
            limiters.limit(get(api::consistency), rates.read_per_sec, &ip),
        )
        .merge(admin_routes(&state, &limiters, rates.read_per_sec, &ip))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(hardening::overloaded))
                .load_shed()
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrent.max(1),
                ))
                .timeout(limits.request_timeout),
        );
    limiters.start_cleanup(Duration::from_secs(60));
    let ops = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset));
    data.merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    if !state.accepting() {
        return Err(Problem::unavailable(
            "shutting_down",
            "the server is shutting down",
        ));
    }
    if let Some(why) = state.store().read_only() {
        return Err(stemedb_store::StoreError::ReadOnly(why).into());
    }
    let head = state.store().head();
    Ok(Json(json!({"status": "ready", "tree_size": head.size})))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let root = state.store().layout().root.clone();
    let m = state.metrics().clone();
    // A few small file reads and one directory listing: off the async workers.
    let _ = tokio::task::spawn_blocking(move || m.refresh_operations(&root)).await;
    match state.metrics().render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            Problem::server_error("internal", "metrics could not be rendered").into_response()
        }
    }
}

async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!("no route for {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Problem {
    Problem::method_not_allowed(
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The one middleware every request passes through, in one pass (seven nested layers cost about
/// 4.5 µs a request: decision 0024):
/// - the request id (the client's `X-Request-Id`, any value, or a new UUID v4) on the request,
///   in the tracing span the request runs in, and on the response unless the handler set one;
/// - the security headers on every response, each unless the handler set it (the dashboard
///   sets its own content security policy);
/// - request count and latency by matched route (never by raw path, so label cardinality stays
///   bounded), and the access log: `debug` for successes, `info` for client errors, `warn` for
///   server errors.
async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let made = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            let id = HeaderValue::from_str(made).unwrap_or(HeaderValue::from_static("-"));
            req.headers_mut().insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or(""));
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let headers = resp.headers_mut();
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, request_id);
    }
    for (name, value) in hardening::security_headers() {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let m = state.metrics();
    m.http_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    let status = resp.status();
    m.http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    let _enter = span.enter();
    let micros = elapsed.as_micros() as u64;
    if status.is_server_error() {
        tracing::warn!(target: "stemedb::access", %method, route, status = status.as_u16(), micros, "request");
    } else if status.is_client_error() {
        tracing::info!(target: "stemedb::access", %method, route, status = status.as_u16(), micros, "request");
    } else {
        tracing::debug!(target: "stemedb::access", %method, route, status = status.as_u16(), micros, "request");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use axum::body::Body;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;
    use stemedb_store::Store;
    use tower::ServiceExt;

    async fn call(state: &AppState, method: &str, uri: &str) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("valid request");
        let resp = app(state.clone()).oneshot(req).await.expect("infallible");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, ctype, String::from_utf8_lossy(&body).into_owned())
    }

    fn state() -> (AppState, tempfile::TempDir) {
        state_with(Limits::defaults())
    }

    fn state_with(limits: Limits) -> (AppState, tempfile::TempDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new().expect("metrics");
        let store = Store::open(
            tmp.path(),
            stemedb_store::StoreOptions::default(),
            Arc::new(metrics.clone()),
        )
        .expect("store");
        (AppState::new(metrics, Arc::new(store), limits), tmp)
    }

    #[tokio::test]
    async fn route_table() {
        let (s, _tmp) = state();
        let cases = [
            ("GET", "/v1/health", 200, "application/json", "\"ok\""),
            ("GET", "/v1/ready", 200, "application/json", "ready"),
            (
                "GET",
                "/nope",
                404,
                "application/problem+json",
                "\"code\":\"not_found\"",
            ),
            (
                "POST",
                "/v1/health",
                405,
                "application/problem+json",
                "\"code\":\"method_not_allowed\"",
            ),
        ];
        for (method, uri, status, ctype, needle) in cases {
            let (st, ct, body) = call(&s, method, uri).await;
            assert_eq!(st.as_u16(), status, "{method} {uri}: {body}");
            assert_eq!(ct, ctype, "{method} {uri}");
            assert!(body.contains(needle), "{method} {uri}: {body}");
        }
        let (_, _, metrics) = call(&s, "GET", "/metrics").await;
        assert!(
            metrics.contains("stemedb_http_requests_total{route=\"/v1/health\",status=\"200\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("process_resident_memory_bytes"),
            "{metrics}"
        );
        assert!(metrics.contains("stemedb_build_info"), "{metrics}");
    }

    #[tokio::test]
    async fn ready_fails_once_shutdown_begins() {
        let (s, _tmp) = state();
        s.begin_shutdown();
        let (st, ct, body) = call(&s, "GET", "/v1/ready").await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ct, "application/problem+json");
        assert!(body.contains("shutting_down"), "{body}");
    }

    async fn send(router: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Body::empty()).expect("valid request");
        router.clone().oneshot(req).await.expect("infallible")
    }

    fn header_of(resp: &Response, name: &str) -> String {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The OpenAPI document lists exactly `ROUTES`, and every one of them is routed.
    #[tokio::test]
    async fn openapi_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("OpenAPI is JSON");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        let (s, _tmp) = state();
        let router = app(s);
        for (method, path) in ROUTES {
            let uri = path.replace("{id}", &"0".repeat(64));
            let resp = send(&router, method, &uri, &[]).await;
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert!(
                !body.contains("no route for") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri} is not routed: {status} {body}"
            );
        }
        let resp = send(&router, "GET", "/v1/openapi.json", &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header_of(&resp, "content-type"), "application/json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let served: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(served, doc);
    }

    /// The dashboard page and every file it references are served with their own types and
    /// a CSP that allows only this origin's scripts, styles and API; unknown assets are 404.
    #[tokio::test]
    async fn the_dashboard_and_its_assets_are_served() {
        let (s, _tmp) = state();
        let router = app(s);
        let resp = send(&router, "GET", "/", &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header_of(&resp, "content-type"), "text/html; charset=utf-8");
        let csp = header_of(&resp, "content-security-policy");
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(header_of(&resp, "x-frame-options"), "DENY");
        let page = resp.into_body().collect().await.expect("body").to_bytes();
        let page = String::from_utf8_lossy(&page).into_owned();
        let mut assets: Vec<&str> = page
            .split("/assets/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assets.push("blake3.js"); // imported by app.js
        assert!(assets.len() >= 3, "{assets:?}");
        for name in assets {
            let resp = send(&router, "GET", &format!("/assets/{name}"), &[]).await;
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
            let want = if name.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            assert_eq!(header_of(&resp, "content-type"), want, "{name}");
        }
        for uri in ["/assets/nope.js", "/assets/..%2Fserver.key"] {
            let resp = send(&router, "GET", uri, &[]).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header_of(&resp, "content-type"), "application/problem+json");
        }
    }

    #[tokio::test]
    async fn every_response_carries_security_headers_and_a_request_id() {
        let (s, _tmp) = state();
        let router = app(s);
        for uri in ["/v1/health", "/nope", "/v1/assertions/zz"] {
            let resp = send(&router, "GET", uri, &[]).await;
            assert_eq!(
                header_of(&resp, "x-content-type-options"),
                "nosniff",
                "{uri}"
            );
            assert_eq!(header_of(&resp, "x-frame-options"), "DENY", "{uri}");
            assert_eq!(header_of(&resp, "cache-control"), "no-store", "{uri}");
            assert!(header_of(&resp, "content-security-policy").contains("default-src 'none'"));
            assert_eq!(header_of(&resp, "x-request-id").len(), 36, "{uri}: a UUID");
        }
        let resp = send(
            &router,
            "GET",
            "/v1/health",
            &[("x-request-id", "trace-me-42")],
        )
        .await;
        assert_eq!(header_of(&resp, "x-request-id"), "trace-me-42");
    }

    #[tokio::test]
    async fn rate_limits_answer_429_with_retry_after_per_endpoint() {
        let mut limits = Limits::defaults();
        limits.rates.read_per_sec = 2;
        let (s, _tmp) = state_with(limits);
        let router = app(s);
        for _ in 0..2 {
            let resp = send(&router, "GET", "/v1/checkpoint", &[]).await;
            assert_eq!(resp.status(), StatusCode::OK);
        }
        // Each route has its own bucket at its class's rate; health and query are not limited
        // by the read class.
        assert_eq!(
            send(&router, "GET", "/v1/checkpoint/key", &[])
                .await
                .status(),
            StatusCode::OK
        );
        let resp = send(&router, "GET", "/v1/checkpoint", &[]).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            header_of(&resp, "retry-after")
                .parse::<u64>()
                .expect("seconds")
                >= 1
        );
        assert_eq!(header_of(&resp, "content-type"), "application/problem+json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"code\":\"rate_limited\""));
        for uri in ["/v1/health", "/v1/query"] {
            assert_eq!(
                send(&router, "GET", uri, &[]).await.status(),
                StatusCode::OK,
                "{uri}"
            );
        }
    }
}
