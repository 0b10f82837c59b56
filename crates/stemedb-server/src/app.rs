//! The axum application: routes, shared state, request metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use stemedb_store::Store;

use crate::api;
use crate::metrics::Metrics;
use crate::problem::Problem;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// Request body limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single-envelope body, bytes.
    pub single_body: usize,
    /// Largest batch body, bytes.
    pub batch_body: usize,
}

struct Inner {
    metrics: Metrics,
    store: Arc<Store>,
    limits: Limits,
    // True while the server accepts traffic; false once shutdown has begun.
    accepting: AtomicBool,
}

impl AppState {
    /// New state around a metrics registry and an open store.
    pub fn new(metrics: Metrics, store: Arc<Store>, limits: Limits) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                metrics,
                store,
                limits,
                accepting: AtomicBool::new(true),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A shared handle to the store, for blocking tasks.
    pub fn store_arc(&self) -> Arc<Store> {
        self.inner.store.clone()
    }

    /// Body limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Marks the server as draining: `/v1/ready` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The router with every route and middleware, ready for `axum::serve` or `oneshot` in tests.
pub fn app(state: AppState) -> Router {
    let batch_limit = state.limits().batch_body;
    Router::new()
        .route(
            "/v1/assert",
            post(api::assert).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route("/v1/assertions/{id}", get(api::get_assertion))
        .route("/v1/checkpoint", get(api::checkpoint))
        .route("/v1/checkpoint/key", get(api::checkpoint_key))
        .route("/v1/proof/inclusion", get(api::inclusion))
        .route("/v1/proof/consistency", get(api::consistency))
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if !state.inner.accepting.load(Ordering::SeqCst) {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .into_response();
    }
    if let Some(why) = state.store().read_only() {
        return api::store_problem(&stemedb_store::StoreError::ReadOnly(why)).into_response();
    }
    let head = state.store().head();
    Json(json!({"status": "ready", "tree_size": head.size})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
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
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "metrics could not be rendered",
            )
            .into_response()
        }
    }
}

async fn not_found(req: Request) -> Problem {
    Problem::not_found(format!("no route for {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Records request count and latency by matched route (never by raw path, so label
/// cardinality stays bounded).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = state.metrics();
    m.http_duration
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
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
        let tmp = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new().expect("metrics");
        let store = Store::open(
            tmp.path(),
            stemedb_store::StoreOptions::default(),
            Arc::new(metrics.clone()),
        )
        .expect("store");
        let limits = Limits {
            single_body: 1 << 20,
            batch_body: 16 << 20,
        };
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
}
