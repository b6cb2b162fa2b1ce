//! What a rejected request gets back: the [`RejectionResponse`] policy and its default,
//! [`JsonRejection`].

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response};

use crate::error::AuthError;

/// Builds the response for a rejected request. Implemented by [`JsonRejection`] and by
/// any `Fn(&AuthError) -> Response<B>` closure.
///
/// Whatever it returns, the layer adds a clone of the [`AuthError`] to the response's
/// extensions.
pub trait RejectionResponse<B> {
    /// The response for `error`. It must not echo the request's key (the error holds at
    /// most its masked hint).
    fn rejection(&self, error: &AuthError) -> Response<B>;
}

impl<B, F> RejectionResponse<B> for F
where
    F: Fn(&AuthError) -> Response<B>,
{
    fn rejection(&self, error: &AuthError) -> Response<B> {
        self(error)
    }
}

/// The default rejection: the status, `WWW-Authenticate` and `Retry-After` of the
/// rejection table, and a JSON body
/// `{"error": {"type": "authentication_error", "code": ..., "message": ...}}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl<B: From<Bytes>> RejectionResponse<B> for JsonRejection {
    fn rejection(&self, error: &AuthError) -> Response<B> {
        let kind = error.kind();
        let body = serde_json::json!({
            "error": {
                "type": "authentication_error",
                "code": kind.code(),
                "message": error.message(),
            }
        });
        let mut response = Response::new(B::from(Bytes::from(body.to_string())));
        *response.status_mut() = kind.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = kind.challenge() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(after) = error.retry_after() {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
