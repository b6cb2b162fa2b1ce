//! [`GrpcRejection`]: rejections as gRPC statuses, for tonic (or any gRPC) services behind
//! [`ApiKeyLayer`](crate::ApiKeyLayer).
//!
//! A gRPC client reads `grpc-status`, not the HTTP status: a plain 401 reaches it as a
//! transport-level failure with no code it can act on. With `GrpcRejection` a rejected
//! call is answered the way a gRPC server answers a failed one (a "Trailers-Only"
//! response: HTTP 200, `content-type: application/grpc`, `grpc-status` and `grpc-message`
//! in the headers, no body), so `tonic::Status::code()` is:
//!
//! | rejection | gRPC status |
//! |---|---|
//! | `missing_api_key`, `invalid_request`, `invalid_api_key`, `api_key_revoked`, `api_key_expired` | `UNAUTHENTICATED` (16) |
//! | `wrong_environment`, `insufficient_scope` | `PERMISSION_DENIED` (7) |
//! | `too_many_failed_attempts`, `rate_limited` | `RESOURCE_EXHAUSTED` (8), with `retry-after` metadata |
//! | `auth_unavailable` | `UNAVAILABLE` (14), with `retry-after` metadata |
//! | `auth_layer_missing` | `INTERNAL` (13) |
//!
//! The message starts with the same code as the JSON body's `error.code`
//! (`api_key_revoked: the API key sk_live_...a1b2 has been revoked`), so a client can
//! branch on it; `www-authenticate` and `retry-after` travel as metadata.
//!
//! ```
//! use hapnd_auth::{Authenticator, GrpcRejection, MemoryKeyStore};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let auth = Authenticator::new(MemoryKeyStore::new());
//! // With tonic: `Server::builder().layer(auth.layer().rejection(GrpcRejection))`.
//! let service = ServiceBuilder::new()
//!     .layer(auth.layer().rejection(GrpcRejection))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//!
//! let response = service.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200); // gRPC puts the outcome in grpc-status
//! assert_eq!(response.headers()["grpc-status"], "16"); // UNAUTHENTICATED
//! assert!(response.headers()["grpc-message"].to_str().unwrap().starts_with("missing_api_key:"));
//! # });
//! ```

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};

use crate::error::{AuthError, AuthErrorKind};
use crate::rejection::RejectionResponse;

/// Answers rejected calls with a gRPC status: see the [module docs](self) for the mapping.
///
/// Works with any response body that has an empty `Default`, tonic's included.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcRejection;

impl GrpcRejection {
    /// The gRPC status code for `kind`: 16 `UNAUTHENTICATED`, 7 `PERMISSION_DENIED`,
    /// 8 `RESOURCE_EXHAUSTED` (a throttled client), 14 `UNAVAILABLE` or 13 `INTERNAL`.
    pub const fn status_code(kind: AuthErrorKind) -> u8 {
        match kind {
            AuthErrorKind::WrongEnvironment | AuthErrorKind::InsufficientScope => 7,
            AuthErrorKind::TooManyFailedAttempts | AuthErrorKind::RateLimited => 8,
            AuthErrorKind::Unavailable => 14,
            AuthErrorKind::LayerMissing => 13,
            AuthErrorKind::MissingApiKey
            | AuthErrorKind::InvalidRequest
            | AuthErrorKind::InvalidApiKey
            | AuthErrorKind::Revoked
            | AuthErrorKind::Expired => 16,
        }
    }
}

impl<B: Default> RejectionResponse<B> for GrpcRejection {
    fn rejection(&self, error: &AuthError) -> Response<B> {
        let mut response = Response::new(B::default());
        let headers = response.headers_mut();
        error.insert_headers(headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(Self::status_code(error.kind()))),
        );
        let message = percent_encode(&format!("{}: {error}", error.code()));
        // Percent-encoded text is visible ASCII: always a valid header value.
        if let Ok(value) = HeaderValue::try_from(message) {
            headers.insert("grpc-message", value);
        }
        response
    }
}

/// `grpc-message` encoding (gRPC over HTTP/2): bytes outside `0x20..=0x7E`, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded_as_grpc_wants() {
        assert_eq!(percent_encode("a b%c\u{e9}\n"), "a b%25c%C3%A9%0A");
    }

    #[test]
    fn every_kind_has_its_status_and_the_code_in_the_message() {
        let response: Response<String> = GrpcRejection.rejection(&AuthError::revoked());
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(
            response.headers()["grpc-message"],
            "api_key_revoked: the API key has been revoked"
        );
        assert!(response.body().is_empty());
        let denied: Response<String> =
            GrpcRejection.rejection(&AuthError::wrong_environment(crate::Environment::Live));
        assert_eq!(denied.headers()["grpc-status"], "7");
    }
}
