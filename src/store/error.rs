//! What can go wrong in a store: [`StoreError`].

use std::fmt;
use std::sync::Arc;

use super::KeyId;

/// The class of a store failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or failed to answer: retry later.
    Unavailable,
    /// The store did not answer within the configured time.
    Timeout,
    /// A record with that id or hash already exists.
    Conflict,
    /// No key has that id.
    NotFound,
    /// The request was invalid (an empty tenant, say).
    Invalid,
}

/// A store failure. Clone, so one failed lookup can answer every request waiting on it.
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A failure of `kind` with a message for operators (it must hold no secret).
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The store could not answer; `source` is the driver's error.
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError {
            kind: StoreErrorKind::Unavailable,
            message: "the key store is unavailable".to_owned(),
            source: Some(Arc::new(source)),
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn not_found(id: &KeyId) -> Self {
        Self::new(StoreErrorKind::NotFound, format!("no key has id {id}"))
    }

    pub(crate) fn invalid(message: String) -> Self {
        Self::new(StoreErrorKind::Invalid, message)
    }

    /// The class of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}
