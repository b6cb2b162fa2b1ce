//! What a rejected request gets back: the [`RejectionResponse`] policy and its default,
//! [`JsonRejection`].

use bytes::Bytes;
use http::Response;

use crate::error::{AuthError, Message, Template};

/// Builds the response for a rejected request. Implemented by [`JsonRejection`] and by
/// any `Fn(&AuthError) -> Response<B>` closure.
///
/// Whatever it returns, the layer adds a clone of the [`AuthError`] to the response's
/// extensions. Start from [`AuthError::response`] to keep the headers the protocol needs.
///
/// A type of your own, for a rejection that carries settings (a closure works too, see
/// [`ApiKeyLayer::rejection`](crate::ApiKeyLayer::rejection)):
///
/// ```
/// use hapnd_auth::{AuthError, Authenticator, MemoryKeyStore, RejectionResponse};
/// use http::Response;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// /// Plain-text rejections with a link to the docs.
/// #[derive(Clone)]
/// struct TextRejection {
///     docs: &'static str,
/// }
///
/// impl RejectionResponse<String> for TextRejection {
///     fn rejection(&self, error: &AuthError) -> Response<String> {
///         let mut response = error.response(format!("{error} (see {})\n", self.docs));
///         response.headers_mut().insert("content-type", "text/plain".parse().unwrap());
///         response
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let auth = Authenticator::new(MemoryKeyStore::new());
/// let service = ServiceBuilder::new()
///     .layer(auth.layer().rejection(TextRejection { docs: "https://example.com/keys" }))
///     .service_fn(|_: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
///     });
/// let response = service.oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(response.status(), 401);
/// assert!(response.body().ends_with("(see https://example.com/keys)\n"));
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="hapnd""#);
/// # });
/// ```
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
        error.response_from(B::from(json_body(error)), Template::Json)
    }
}

const BODY_START: &str = r#"{"error":{"type":"authentication_error","code":""#;
const BODY_MESSAGE: &str = r#"","message":"#;
const BODY_END: &str = r#""}}"#;

/// `{"error":{"type":"authentication_error","code":...,"message":...}}`. Runs on every
/// rejection: a fixed message's body was built at compile time (no allocation); a hinted
/// one is written in one allocation, sized exactly so that `Bytes` takes it over as is (a
/// `Vec` with spare capacity would cost `Bytes` a second allocation for its shared header).
fn json_body(error: &AuthError) -> Bytes {
    let code = error.kind().code();
    let (hint, what) = match error.message_parts() {
        Message::Static { body, .. } => return Bytes::from_static(body.as_bytes()),
        Message::Hinted { hint, what } => (hint, what),
        // A scope guard's message: scopes of the scope grammar in fixed text.
        Message::Text(text) => {
            let body = [BODY_START, code, BODY_MESSAGE, "\"", text, BODY_END].concat();
            return Bytes::from(body);
        }
    };
    // Fixed ASCII text around a hint limited to [A-Za-z0-9_.?]: nothing to escape.
    let parts = [
        BODY_START,
        code,
        BODY_MESSAGE,
        HINTED_PREFIX,
        hint,
        " ",
        what,
        BODY_END,
    ];
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        body.extend_from_slice(part.as_bytes());
    }
    Bytes::from(body)
}

const HINTED_PREFIX: &str = r#""the API key "#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_valid_json_with_the_message() {
        let error = AuthError::missing();
        let body: serde_json::Value = serde_json::from_slice(&json_body(&error)).unwrap();
        assert_eq!(body["error"]["code"], "missing_api_key");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["message"], error.to_string());
        let hinted = AuthError::revoked().with_hint("sk_live_...\"a1\"".to_owned());
        let body: serde_json::Value = serde_json::from_slice(&json_body(&hinted)).unwrap();
        assert_eq!(body["error"]["message"], hinted.to_string());
        // A hint from a store is reduced to a hint's characters.
        assert_eq!(hinted.key_hint(), Some("sk_live_...?a1?"));
    }

    /// Every error the crate builds, with and without a hint.
    fn every_error() -> Vec<AuthError> {
        use crate::error::Malformed;
        use crate::key::{Environment, KeyFormatError};
        use crate::store::{StoreError, StoreErrorKind};
        let mut errors = vec![
            AuthError::missing(),
            AuthError::unknown(),
            AuthError::revoked(),
            AuthError::expired(),
            AuthError::layer_missing(),
            AuthError::wrong_environment(Environment::Live),
            AuthError::wrong_environment(Environment::Sandbox),
            AuthError::unavailable(
                StoreError::new(StoreErrorKind::Timeout, "slow"),
                std::time::Duration::from_secs(1),
            ),
            AuthError::insufficient_scope(std::sync::Arc::new(crate::scope::ScopeRule::new(
                ["events:write"],
                true,
            ))),
            AuthError::insufficient_scope(std::sync::Arc::new(crate::scope::ScopeRule::new(
                ["a:b", "c"],
                false,
            ))),
            AuthError::rate_limited(
                "100/m,burst=7".parse().unwrap(),
                std::time::Duration::from_millis(2_500),
            ),
        ];
        for m in [
            Malformed::MultipleHeaders,
            Malformed::TooLong,
            Malformed::InvalidBytes,
            Malformed::EmptyToken,
            Malformed::Syntax,
        ] {
            errors.push(AuthError::malformed(m));
        }
        for e in [
            KeyFormatError::UnknownPrefix,
            KeyFormatError::WrongLength,
            KeyFormatError::InvalidCharacter,
            KeyFormatError::BadChecksum,
        ] {
            errors.push(AuthError::format(e));
        }
        let hinted: Vec<AuthError> = errors
            .iter()
            .map(|e| e.clone().with_hint("sk_live_...a1b2".to_owned()))
            .collect();
        errors.extend(hinted);
        errors
    }

    #[test]
    fn prebuilt_headers_are_what_insert_headers_sets() {
        use http::header::{CONTENT_TYPE, RETRY_AFTER};
        let mut errors = every_error();
        errors.push(AuthError::throttled(std::time::Duration::from_millis(
            2_500,
        )));
        for error in errors {
            let mut expected = http::HeaderMap::new();
            error.insert_headers(&mut expected);
            assert!(expected.contains_key(http::header::CACHE_CONTROL));
            let plain = error.response(());
            assert_eq!(plain.headers(), &expected, "{:?}", error.kind());
            assert_eq!(plain.status(), error.status());
            expected.insert(CONTENT_TYPE, "application/json".parse().unwrap());
            let json: Response<Bytes> = JsonRejection.rejection(&error);
            assert_eq!(json.headers(), &expected, "{:?}", error.kind());
            assert_eq!(
                json.headers().get(RETRY_AFTER).is_some(),
                error.retry_after().is_some()
            );
        }
    }

    #[test]
    fn every_body_is_the_json_serde_would_write() {
        for error in every_error() {
            let body = json_body(&error);
            let parsed: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{:?}: not JSON ({e})", error.kind()));
            let expected = serde_json::json!({"error": {
                "type": "authentication_error",
                "code": error.kind().code(),
                "message": error.to_string(),
            }});
            assert_eq!(parsed, expected, "{:?}", error.kind());
        }
    }
}
