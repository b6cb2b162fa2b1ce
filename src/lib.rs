//! API-key authentication for [tower], axum and hyper services.
//!
//! Every request carries `Authorization: Bearer sk_live_...` (the live environment) or
//! `sk_test_...` (the sandbox). [`ApiKeyLayer`] parses the header, validates the key's
//! prefix, length and checksum, hashes it with SHA-256, resolves the hash through a
//! short-TTL cache in front of a [`KeyStore`], and inserts the [`Principal`] (tenant,
//! environment, key id and name) into the request extensions. Everything else gets the
//! rejection the README's table lists, as a response, never an error.
//!
//! ```
//! use axum::{Router, routing::get};
//! use hapnd_auth::{Authenticator, Environment, MemoryKeyStore, NewKey, Principal};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let auth = Authenticator::new(MemoryKeyStore::new());
//! let created = auth.create_key(NewKey::new("acme", Environment::Live, "ci")).await.unwrap();
//!
//! async fn whoami(axum::Extension(principal): axum::Extension<Principal>) -> String {
//!     format!("{} ({})", principal.tenant(), principal.environment())
//! }
//! let app = Router::new().route("/whoami", get(whoami)).layer(auth.layer());
//!
//! let request = http::Request::get("/whoami")
//!     .header("authorization", format!("Bearer {}", created.key.expose_secret()))
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//!
//! let anonymous = http::Request::get("/whoami").body(axum::body::Body::empty()).unwrap();
//! assert_eq!(app.oneshot(anonymous).await.unwrap().status(), 401);
//! # });
//! ```
//!
//! # Revocation
//! Once [`Authenticator::revoke`] returns, every request with that key is rejected, even
//! one whose store lookup was in flight when revoke was called. Durable stores' change
//! feeds call the [`Invalidator`] so revocations made elsewhere reach this process too.
//!
//! # Hostile traffic
//! The key's checksum is public, so anyone can mint well-formed keys, each a store lookup.
//! Two defences, checked after the cache so a valid cached key never meets either:
//! - [`AuthenticatorBuilder::throttle_failed_attempts`] (off by default): a per-client
//!   budget of failed attempts ([`FailedAttemptLimit`]); over it, `429
//!   too_many_failed_attempts` with `Retry-After`, before any store lookup. Clients are told
//!   apart by [`ClientIdentity`]: the peer address from the [`ClientAddr`] request
//!   extension unless configured otherwise.
//! - [`AuthenticatorBuilder::max_concurrent_lookups`] (32 by default): a bound on store
//!   lookups in flight; over it, a miss waits at most the lookup timeout, then gets
//!   `503 auth_unavailable`.
//!
//! # Metrics
//! The authenticator records counters, gauges and a histogram through the [`metrics`]
//! facade (names and labels in the README's "Operating the gateway"). Install the
//! recorder (`metrics-exporter-prometheus`, say) **before** building the authenticator:
//! handles are registered once, at [`AuthenticatorBuilder::build`], so the cache-hit path
//! costs an atomic increment, not a lookup by name. Labels never carry a key, a hash, a
//! key id or a tenant.
//!
//! [`metrics`]: https://docs.rs/metrics
//!
//! # Packages
//! This crate is the library. The `hapnd-auth` command (gateway, key administration, login)
//! is the `hapnd-auth-cli` package in the same workspace, so depending on this crate never
//! compiles clap or the gateway's HTTP stack.
//!
//! # Feature flags
//! - `sqlite` (default): `SqliteKeyStore`, keys in a SQLite file, with a change feed that
//!   notices other processes' commits.
//! - `postgres`: `PostgresKeyStore`, keys in PostgreSQL, with revocations pushed to every
//!   instance through `LISTEN`/`NOTIFY`.
//! - `axum`: [`Principal`] is an axum extractor (and `Option<Principal>` an optional one).
//! - `grpc`: `GrpcRejection`, rejections as gRPC statuses for tonic services.
//! - `serde`: `Serialize` for [`Principal`]; `Serialize` and `Deserialize` for [`KeyId`],
//!   [`KeyRecord`], [`Environment`] and [`KeyHash`]. Nothing serializes a key.
//! - `test-util`: `Principal::for_test`, a principal for handler tests in one line.
//!
//! Items that need a feature say so in these docs (built with every feature on).
//!
//! [tower]: https://docs.rs/tower
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authenticator;
mod bearer;
mod cache;
mod client_identity;
pub mod credentials;
mod environment;
mod error;
mod future;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
mod key;
mod layer;
mod metrics;
mod principal;
mod rate_limit;
mod rejection;
mod scope;
#[cfg(feature = "serde")]
mod serialize;
mod service;
mod store;
mod throttle;
mod usage;

pub use authenticator::{Authenticator, AuthenticatorBuilder, MIN_USAGE_FLUSH_INTERVAL};
pub use bearer::MAX_HEADER_LEN;
pub use cache::{ChannelHealth, Invalidator};
pub use client_identity::{ClientAddr, ClientIdentity, InvalidProxyAddress, TrustedProxies};
pub use environment::{
    EnvironmentRouter, RequireEnvironment, RequireEnvironmentLayer, RouterFuture,
};
pub use error::{AuthError, AuthErrorKind};
pub use future::ResponseFuture;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use grpc::GrpcRejection;
pub use key::{
    ApiKey, Environment, KEY_LEN, KeyFormatError, KeyHash, UnknownEnvironment, redact_keys,
};
pub use layer::ApiKeyLayer;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use principal::MissingPrincipal;
pub use principal::Principal;
pub use rejection::{JsonRejection, RejectionResponse};
pub use scope::{RequireScope, RequireScopeLayer};
pub use service::ApiKeyService;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use store::ChangeFeed;
pub use store::ListPage;
pub use store::{
    Actor, ActorKind, AuditTrail, EventQuery, KeyEvent, KeyEventKind, KeyPolicy, Roll, Rotation,
    prune_events,
};
pub use store::{
    CreatedKey, KeyId, KeyRecord, KeyStatus, KeyStore, LastUsed, MAX_METADATA_LEN, MAX_SCOPE_LEN,
    MAX_SCOPES, MemoryKeyStore, Metadata, NewKey, RateLimit, StoreError, StoreErrorKind,
    is_valid_key_name, is_valid_scope, is_valid_tenant,
};
pub use store::{ExpiringKeys, ExpiringQuery};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::{ListenOptions, NOTIFY_CHANNEL, PostgresKeyStore, PostgresKeyStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::{SqliteKeyStore, SqliteKeyStoreBuilder};
pub use throttle::FailedAttemptLimit;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The guides' Rust blocks (`docs/`), compiled as doctests too.
#[cfg(doctest)]
pub mod guide_doctests {
    #[doc = include_str!("../docs/library.md")]
    pub struct Library;
    #[doc = include_str!("../docs/gateway.md")]
    pub struct Gateway;
    #[doc = include_str!("../docs/forward-auth.md")]
    pub struct ForwardAuth;
    #[doc = include_str!("../docs/key-stores.md")]
    pub struct KeyStores;
    #[doc = include_str!("../docs/operating.md")]
    pub struct Operating;
    #[doc = include_str!("../docs/security.md")]
    pub struct Security;
    #[doc = include_str!("../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/fuzzing.md")]
    pub struct Fuzzing;
    #[doc = include_str!("../docs/upstream.md")]
    pub struct Upstream;
    #[doc = include_str!("../docs/rate-limits.md")]
    pub struct RateLimits;
    #[doc = include_str!("../docs/audit.md")]
    pub struct Audit;
}
