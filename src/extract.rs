//! Request extractors whose rejections speak the server's one error shape.
//!
//! axum's own `Json` rejects with plain-text bodies; [`ApiJson`] wraps it and
//! turns each rejection into an [`ApiError`]: wrong content type → 415,
//! unreadable or oversized body → 400/413, malformed JSON → 400, JSON of the
//! wrong shape (missing field, wrong type, unknown field) → 422.
//! [`AsyncMode`] reads how a client wants to be answered, [`JobId`] a job
//! id from the path, [`Kind`] hands a handler its worker type.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::kind::JobKind;
use crate::state::AppState;

/// `axum::Json<T>` with [`ApiError`] rejections. The body is parsed as
/// JSON first and given its shape second, so a body that is not JSON is
/// always a 400, whatever its first wrong token would have mismatched.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        serde_json::from_value(value).map(ApiJson).map_err(|e| {
            ApiError::Invalid(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            ))
        })
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::Invalid(text),
            JsonRejection::JsonSyntaxError(_) => ApiError::MalformedJson(text),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a request with `Content-Type: application/json`".into(),
            ),
            JsonRejection::BytesRejection(ref inner) => body_error(inner, inner.status(), text),
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

/// Maps a body-reading failure: over the route's limit → 413, a client
/// that stopped sending (the connection's body timeouts) → 408, else 400.
pub fn body_error(
    rejection: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: String,
) -> ApiError {
    let mut source = Some(rejection);
    while let Some(err) = source {
        if let Some(timeout) = err.downcast_ref::<crate::serve::BodyTimedOut>() {
            return ApiError::RequestTimeout(timeout.to_string());
        }
        source = err.source();
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(text)
    } else {
        ApiError::BadRequest(text)
    }
}

/// Longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// How the client asked to be answered: `?mode=async|sync` (the query
/// wins) or `Prefer: respond-async`, and a well-formed `Idempotency-Key`
/// (1 to 255 visible ASCII characters). A `mode` in the body, read later,
/// is applied with [`AsyncMode::apply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AsyncMode {
    pub is_async: bool,
    /// `Prefer: respond-async` was sent (and is honoured).
    pub preferred: bool,
    pub idempotency_key: Option<String>,
}

impl AsyncMode {
    /// Reads the mode from a request's query and headers.
    pub fn read(query: Option<&str>, headers: &axum::http::HeaderMap) -> Result<Self, ApiError> {
        let prefer = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| {
                p.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
            });
        let mut mode = AsyncMode {
            is_async: prefer,
            preferred: prefer,
            idempotency_key: None,
        };
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "mode" {
                mode.apply(Some(value))?;
            }
        }
        if let Some(raw) = headers.get("idempotency-key") {
            let key = raw.to_str().unwrap_or("").trim();
            let visible = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                )));
            }
            mode.idempotency_key = Some(key.to_string());
        }
        Ok(mode)
    }

    /// An explicit `mode` (query, JSON or multipart field) overrides `Prefer`.
    pub fn apply(&mut self, mode: Option<&str>) -> Result<(), ApiError> {
        match mode {
            None => {}
            Some("async") => self.is_async = true,
            Some("sync") => {
                self.is_async = false;
                self.preferred = false;
            }
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "mode must be async or sync, got {other:?}"
                )))
            }
        }
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AsyncMode {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        AsyncMode::of_request(parts)
    }
}

impl AsyncMode {
    /// The mode a request's head asks for, its `Idempotency-Key` scoped to
    /// the request's tenant ([`crate::tenants::scoped_key`]).
    pub fn of_request(parts: &Parts) -> Result<Self, ApiError> {
        let mut mode = AsyncMode::read(parts.uri.query(), &parts.headers)?;
        if let Some(caller) = parts.extensions.get::<crate::tenants::Caller>() {
            mode.idempotency_key = mode
                .idempotency_key
                .map(|key| crate::tenants::scoped_key(caller, &key));
        }
        Ok(mode)
    }
}

/// A job id from the path; anything else is a 400 in the error shape.
#[derive(Debug, Clone, Copy)]
pub struct JobId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let raw = params
            .iter()
            .find(|(name, _)| name == "job_id")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        uuid::Uuid::parse_str(raw)
            .map(JobId)
            .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a job id")))
    }
}

/// Path parameters of a job route, for the OpenAPI document.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobIdPath {
    /// The job's id.
    pub job_id: String,
}

/// The worker type `K`, for its handlers; 503 if it is not registered.
pub struct Kind<K>(pub std::sync::Arc<K>);

impl<K: JobKind> FromRequestParts<AppState> for Kind<K> {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .kind::<K>()
            .map(Kind)
            .ok_or_else(|| ApiError::Unavailable(format!("no {} workers run here", K::NAME)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn prefer_respond_async_is_honoured_and_an_explicit_sync_overrides_it() {
        let prefer = headers(&[("prefer", "wait=5, respond-async")]);
        let mode = AsyncMode::read(None, &prefer).unwrap();
        assert!(mode.is_async && mode.preferred);
        let mode = AsyncMode::read(Some("mode=sync"), &prefer).unwrap();
        assert!(!mode.is_async && !mode.preferred, "the query wins");
        let mode = AsyncMode::read(Some("dpi=72&mode=async"), &HeaderMap::new()).unwrap();
        assert!(mode.is_async && !mode.preferred);
    }

    #[test]
    fn a_bad_mode_or_idempotency_key_is_a_400() {
        let err = AsyncMode::read(Some("mode=later"), &HeaderMap::new()).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
        for key in ["", "tab\there"] {
            let h: HeaderMap = [(
                axum::http::HeaderName::from_static("idempotency-key"),
                axum::http::HeaderValue::from_str(key).unwrap(),
            )]
            .into_iter()
            .collect();
            assert!(AsyncMode::read(None, &h).is_err(), "{key:?} accepted");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let h: HeaderMap = [(
            axum::http::HeaderName::from_static("idempotency-key"),
            axum::http::HeaderValue::from_str(&long).unwrap(),
        )]
        .into_iter()
        .collect();
        assert!(AsyncMode::read(None, &h).is_err());
        let ok = headers(&[("idempotency-key", "order-17")]);
        let mode = AsyncMode::read(None, &ok).unwrap();
        assert_eq!(mode.idempotency_key.as_deref(), Some("order-17"));
    }
}
