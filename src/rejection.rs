//! What a rejected request gets back: the [`RejectionResponse`] policy and its default,
//! [`JsonRejection`].

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};

use crate::error::{AuthError, Message};

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
        let mut response = error.response(B::from(json_body(error)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// `{"error":{"type":"authentication_error","code":...,"message":...}}` in one allocation,
/// with serde_json escaping the message. Runs on every rejection, so no JSON tree.
fn json_body(error: &AuthError) -> Bytes {
    let mut body = Vec::with_capacity(160);
    body.extend_from_slice(br#"{"error":{"type":"authentication_error","code":""#);
    body.extend_from_slice(error.kind().code().as_bytes());
    body.extend_from_slice(br#"","message":"#);
    let written = match error.message_parts() {
        Message::Static(text) => serde_json::to_writer(&mut body, text),
        // Fixed ASCII text around a hint limited to [A-Za-z0-9_.]: nothing to escape.
        Message::Hinted { hint, what } => {
            for part in [r#""the API key "#, hint, " ", what, r#"""#] {
                body.extend_from_slice(part.as_bytes());
            }
            Ok(())
        }
    };
    // Writing a string into a Vec cannot fail.
    debug_assert!(written.is_ok());
    body.extend_from_slice(b"}}");
    Bytes::from(body)
}

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
}
