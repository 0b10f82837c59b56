//! RFC 9457 problem details: every error response is `application/problem+json` with a stable
//! `code`. The mapping from core error classes to HTTP statuses lives here and only here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stemedb_core::ErrorClass;
use stemedb_store::StoreError;

/// Media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// A URI naming the problem type (relative, resolvable against the server's docs).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Stable machine code.
    pub code: &'static str,
    /// Seconds for a `Retry-After` header (a 503 from an open breaker, for example).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `status`, stable `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("/docs/problems#{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            retry_after: None,
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: admin credentials missing or wrong.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    /// 403: the registry or the policy refuses the caller.
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 404 with its own code (`quarantined`, `not_found`).
    pub fn missing(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 405.
    pub fn method_not_allowed(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, code, detail)
    }

    /// 408: the request head did not arrive in time.
    pub fn request_timeout(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::REQUEST_TIMEOUT, code, detail)
    }

    /// 413.
    pub fn too_large(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, code, detail)
    }

    /// 415.
    pub fn unsupported_media_type(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, code, detail)
    }

    /// 422: valid JSON, but not an acceptable value.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 429.
    pub fn too_many_requests(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
    }

    /// 503: the server cannot take this now (read-only, draining, overloaded, breaker open).
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// 500 with a detail of its own (the caller logs the cause).
    pub fn server_error(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail)
    }

    /// The same problem with a `Retry-After` of `secs`.
    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    /// The problem for a core validation error.
    pub fn from_core(e: &stemedb_core::Error) -> Problem {
        Problem::new(status_of(e.class()), e.code(), e.to_string())
    }

    /// 500 with a generic detail; the caller logs the real error.
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }

    /// 404 for an unknown route.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

/// The problem for a store failure. Internal details go to the log, not the client.
pub fn store_problem(e: &StoreError) -> Problem {
    match e {
        StoreError::ReadOnly(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            format!(
                "the server is read-only after a storage failure ({why}); an operator must restart it"
            ),
        ),
        StoreError::OutcomeUnknown(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "the write reached the log but its fsync failed ({why}): it may or may not be \
                 durable, which a restart decides. The server is now read-only; retrying after \
                 the restart is safe (writes are idempotent)"
            ),
        ),
        StoreError::Closed => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        StoreError::OutOfRange(m) => {
            Problem::new(StatusCode::BAD_REQUEST, "out_of_range", m.clone())
        }
        other => {
            tracing::error!(error = %other, "store error");
            Problem::internal()
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        store_problem(&e)
    }
}

impl From<stemedb_core::Error> for Problem {
    fn from(e: stemedb_core::Error) -> Problem {
        Problem::from_core(&e)
    }
}

impl From<axum::extract::rejection::QueryRejection> for Problem {
    fn from(e: axum::extract::rejection::QueryRejection) -> Problem {
        Problem::bad_request("bad_query", e.body_text())
    }
}

/// 413 for a request body past `limit` bytes.
pub fn body_too_large(limit: usize) -> Problem {
    Problem::too_large(
        "too_large",
        format!("request body is larger than {limit} bytes"),
    )
}

/// The problem for a request body that could not be read: 413 past `limit`, else 400.
pub fn body_rejection(rej: axum::extract::rejection::BytesRejection, limit: usize) -> Problem {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large(limit)
    } else {
        Problem::bad_request("bad_body", rej.body_text())
    }
}

/// The success statuses handlers answer with. With the error mapping in this file, every
/// status the API sends is chosen here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// 200.
    Ok,
    /// 201: a new assertion or record.
    Created,
    /// 202: held in quarantine.
    Accepted,
    /// 204.
    NoContent,
}

impl Done {
    /// The HTTP status.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Done::Ok => StatusCode::OK,
            Done::Created => StatusCode::CREATED,
            Done::Accepted => StatusCode::ACCEPTED,
            Done::NoContent => StatusCode::NO_CONTENT,
        }
    }
}

impl IntoResponse for Done {
    fn into_response(self) -> Response {
        self.status().into_response()
    }
}

/// The HTTP status for each class of core error.
pub fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Malformed => StatusCode::BAD_REQUEST,
        ErrorClass::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("serializing strings and integers cannot fail");
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_classes_map_to_statuses() {
        let cases = [
            (stemedb_core::Error::MalformedEnvelope("x".into()), 400),
            (stemedb_core::Error::BadSignature, 422),
            (stemedb_core::Error::UnknownField("x".into()), 422),
            (
                stemedb_core::Error::TooLarge {
                    what: "x",
                    actual: 2,
                    limit: 1,
                },
                413,
            ),
        ];
        for (err, status) in cases {
            let p = Problem::from_core(&err);
            assert_eq!(p.status, status, "{err}");
            assert_eq!(p.code, err.code());
        }
    }
}
