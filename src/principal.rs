//! [`Principal`]: who a request authenticated as, put into the request extensions.

use std::fmt;
use std::sync::Arc;

use crate::key::Environment;
use crate::store::{KeyId, KeyRecord};

/// The tenant, environment and key a request authenticated with.
///
/// The layer inserts it into the request extensions. Cloning it is one reference-count
/// increment. With the `axum` feature it is also an extractor.
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

struct Inner {
    tenant: String,
    environment: Environment,
    key_id: KeyId,
    key_name: String,
    key_hint: String,
}

impl Principal {
    /// A principal for `record`'s key.
    pub fn from_record(record: KeyRecord) -> Self {
        Principal(Arc::new(Inner {
            tenant: record.tenant,
            environment: record.environment,
            key_id: record.id,
            key_name: record.name,
            key_hint: record.hint,
        }))
    }

    /// The tenant the key belongs to.
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    /// The environment the key opens.
    pub fn environment(&self) -> Environment {
        self.0.environment
    }

    /// The key's id.
    pub fn key_id(&self) -> &KeyId {
        &self.0.key_id
    }

    /// The key's human name.
    pub fn key_name(&self) -> &str {
        &self.0.key_name
    }

    /// The key's masked hint: `sk_live_...a1b2`.
    pub fn key_hint(&self) -> &str {
        &self.0.key_hint
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("tenant", &self.0.tenant)
            .field("environment", &self.0.environment)
            .field("key_id", &self.0.key_id)
            .field("key_name", &self.0.key_name)
            .field("key_hint", &self.0.key_hint)
            .finish()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.key_id == other.0.key_id
                && self.0.tenant == other.0.tenant
                && self.0.environment == other.0.environment)
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::Principal;

    /// The rejection of the [`Principal`] extractor: the layer is not installed on this route.
    #[derive(Debug)]
    pub struct MissingPrincipal;

    impl IntoResponse for MissingPrincipal {
        fn into_response(self) -> Response {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "hapnd_auth::Principal is missing from the request extensions: \
                 is `ApiKeyLayer` installed on this route (`Router::layer`, not `route_layer` \
                 on another router)?",
            )
                .into_response()
        }
    }

    impl std::fmt::Display for MissingPrincipal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the request has no Principal: ApiKeyLayer is not installed")
        }
    }

    impl std::error::Error for MissingPrincipal {}

    impl<S: Send + Sync> FromRequestParts<S> for Principal {
        type Rejection = MissingPrincipal;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .ok_or(MissingPrincipal)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Principal>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingPrincipal;
