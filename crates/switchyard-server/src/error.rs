//! Every HTTP error Switchyard returns is an RFC 9457 `application/problem+json` body made
//! here, from one exhaustive match of [`Problem`] to a status, a stable `type` and a title.
//! Handlers never build error responses themselves.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The kinds of problem. Each has a stable `type` URI, `/problems/<code>`, documented in
/// `docs/http-api.md` and served by the server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The body is not parseable (bad JSON, bad base64).
    Malformed,
    /// The body parses but breaks a rule (a CloudEvents attribute, a request field).
    Invalid,
    Unauthenticated,
    Forbidden,
    /// A CloudEvents `source` no `[[sources]]` entry declares, with undeclared senders refused.
    UndeclaredSource,
    /// A webhook's signature, timestamp or token does not verify.
    InvalidSignature,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    /// Ingest itself is saturated; retry after the `Retry-After` delay.
    Saturated,
    /// One source has used its storage quota; other sources are unaffected.
    QuotaExceeded,
    /// The store cannot commit now; nothing was stored.
    StoreUnavailable,
    ShuttingDown,
    Internal,
}

impl Problem {
    pub fn code(self) -> &'static str {
        match self {
            Problem::Malformed => "malformed-request",
            Problem::Invalid => "invalid-request",
            Problem::Unauthenticated => "unauthenticated",
            Problem::Forbidden => "forbidden",
            Problem::UndeclaredSource => "undeclared-source",
            Problem::InvalidSignature => "invalid-signature",
            Problem::NotFound => "not-found",
            Problem::MethodNotAllowed => "method-not-allowed",
            Problem::Conflict => "conflict",
            Problem::TooLarge => "payload-too-large",
            Problem::UnsupportedMediaType => "unsupported-media-type",
            Problem::Saturated => "ingest-saturated",
            Problem::QuotaExceeded => "source-quota-exceeded",
            Problem::StoreUnavailable => "store-unavailable",
            Problem::ShuttingDown => "shutting-down",
            Problem::Internal => "internal-error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Problem::Malformed | Problem::Invalid => StatusCode::BAD_REQUEST,
            Problem::Unauthenticated => StatusCode::UNAUTHORIZED,
            Problem::Forbidden | Problem::UndeclaredSource | Problem::InvalidSignature => {
                StatusCode::FORBIDDEN
            }
            Problem::NotFound => StatusCode::NOT_FOUND,
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::Conflict => StatusCode::CONFLICT,
            Problem::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::Saturated | Problem::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Problem::StoreUnavailable | Problem::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Problem::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Problem::Malformed => "The request body could not be parsed",
            Problem::Invalid => "The request is not valid",
            Problem::Unauthenticated => "A valid API token is required",
            Problem::Forbidden => "Not allowed",
            Problem::UndeclaredSource => "The event's source is not declared",
            Problem::InvalidSignature => "The request's signature does not verify",
            Problem::NotFound => "Not found",
            Problem::MethodNotAllowed => "Method not allowed",
            Problem::Conflict => "Conflict with the current state",
            Problem::TooLarge => "The request body is too large",
            Problem::UnsupportedMediaType => "Unsupported media type",
            Problem::Saturated => "Ingest is saturated; retry later",
            Problem::QuotaExceeded => "This source has used its storage quota; retry later",
            Problem::StoreUnavailable => "The store cannot commit right now; nothing was stored",
            Problem::ShuttingDown => "The server is shutting down",
            Problem::Internal => "Internal error",
        }
    }

    pub const ALL: [Problem; 16] = [
        Problem::Malformed,
        Problem::Invalid,
        Problem::Unauthenticated,
        Problem::Forbidden,
        Problem::UndeclaredSource,
        Problem::InvalidSignature,
        Problem::NotFound,
        Problem::MethodNotAllowed,
        Problem::Conflict,
        Problem::TooLarge,
        Problem::UnsupportedMediaType,
        Problem::Saturated,
        Problem::QuotaExceeded,
        Problem::StoreUnavailable,
        Problem::ShuttingDown,
        Problem::Internal,
    ];

    pub fn from_code(code: &str) -> Option<Problem> {
        Problem::ALL.into_iter().find(|p| p.code() == code)
    }
}

/// One offending field in a validation problem.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    /// Index of the event in a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The attribute or request field.
    pub field: String,
    /// RFC 6901 JSON pointer into the request body, when the field is in the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// The HTTP header, when the field came from one (binary mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    pub detail: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub problem: Problem,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            format!("/problems/{}", self.problem.code()).into(),
        );
        m.insert("title".into(), self.problem.title().into());
        m.insert("status".into(), self.problem.status().as_u16().into());
        m.insert("detail".into(), self.detail.clone().into());
        if let Some(first) = self.errors.first() {
            m.insert("field".into(), first.field.clone().into());
        }
        if !self.errors.is_empty() {
            m.insert(
                "errors".into(),
                serde_json::to_value(&self.errors).unwrap_or_default(),
            );
        }
        Value::Object(m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.problem.status(), self.body().to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.problem == Problem::Unauthenticated {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchyard\""),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<switchyard_store::Error> for ApiError {
    fn from(e: switchyard_store::Error) -> Self {
        use switchyard_store::Error as E;
        match e {
            E::Saturated => {
                let mut a = ApiError::new(
                    Problem::Saturated,
                    "the store's write queue is full; nothing was stored",
                );
                a.retry_after = Some(1);
                a
            }
            E::Unavailable(m) => {
                let mut a = ApiError::new(Problem::StoreUnavailable, m);
                a.retry_after = Some(5);
                a
            }
            E::Closed => ApiError::new(Problem::ShuttingDown, "the store is closing"),
            E::NotFound(m) => ApiError::new(Problem::NotFound, m),
            E::Conflict(m) => ApiError::new(Problem::Conflict, m),
            E::Fenced { .. } | E::Url(_) | E::Corrupt(_) | E::Migration(_) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(Problem::Internal, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut codes: Vec<_> = Problem::ALL.iter().map(|p| p.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Problem::ALL.len());
        for p in Problem::ALL {
            assert_eq!(Problem::from_code(p.code()), Some(p));
            assert!(p.status().is_client_error() || p.status().is_server_error());
        }
    }

    #[test]
    fn saturation_carries_retry_after() {
        let e: ApiError = switchyard_store::Error::Saturated.into();
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
