//! Request extractors whose rejections speak the server's one error shape.
//!
//! axum's own `Json` rejects with plain-text bodies; [`ApiJson`] wraps it and
//! turns each rejection into an [`ApiError`]: wrong content type → 415,
//! unreadable or oversized body → 400/413, malformed JSON → 400, JSON of the
//! wrong shape (missing field, wrong type, unknown field) → 422.

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::StatusCode;

use crate::error::ApiError;

/// `axum::Json<T>` with [`ApiError`] rejections.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::Invalid(text),
            JsonRejection::JsonSyntaxError(_) => ApiError::MalformedJson(text),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(ref inner)
                if inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge(text)
            }
            _ => ApiError::BadRequest(text),
        }
    }
}

/// `axum::extract::Query<T>` with [`ApiError`] rejections (400).
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// Maps a body-reading failure: over the route's limit → 413, else 400.
pub fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(text)
    } else {
        ApiError::BadRequest(text)
    }
}
