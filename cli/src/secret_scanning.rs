//! `POST /auth/secret-scanning/github`: GitHub's secret-scanning partner protocol. GitHub
//! sends the keys it found in public code as a JSON array of `{token, type, url, source}`,
//! signed with ECDSA P-256 / SHA-256 over the raw body (`Github-Public-Key-Signature`, base64
//! of the DER signature) by the key named in `Github-Public-Key-Identifier`. The public keys
//! come from a file the operator gives (`serve --secret-scanning-keys`, the JSON of GitHub's
//! `/meta/public_keys/secret_scanning`): nothing is fetched at run time.
//!
//! A verified report revokes every reported key that exists, at once (the answer is sent
//! once this gateway rejects it), audited with the report's URL; the answer is GitHub's
//! feedback array (`token_hash`, `token_type`, `label`). A bad signature, an unknown key
//! id, an oversize or malformed body is refused and revokes nothing. A replayed report
//! finds its keys revoked already and changes nothing but the trail (`reported_leaked`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hapnd_auth::{Actor, ApiKey, Authenticator, KeyStore};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::AnyStore;

/// The route GitHub is given as the partner endpoint.
pub(crate) const PATH: &str = "/auth/secret-scanning/github";
/// The largest report accepted: GitHub batches matches, a few KiB each at most.
pub(crate) const MAX_BODY: usize = 256 * 1024;
/// The most matches one report may carry.
const MAX_MATCHES: usize = 1000;

/// GitHub's public keys, by identifier.
pub(crate) struct PublicKeys(HashMap<String, VerifyingKey>);

#[derive(Deserialize)]
struct MetaFile {
    public_keys: Vec<MetaKey>,
}

#[derive(Deserialize)]
struct MetaKey {
    key_identifier: String,
    key: String,
}

impl PublicKeys {
    /// Reads the JSON GitHub's meta endpoint serves:
    /// `{"public_keys": [{"key_identifier": ..., "key": "-----BEGIN PUBLIC KEY-----..."}]}`.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let meta: MetaFile = serde_json::from_str(text).map_err(|e| {
            format!("not GitHub's secret-scanning public keys (JSON with public_keys): {e}")
        })?;
        let mut keys = HashMap::new();
        for key in meta.public_keys {
            let verifying = VerifyingKey::from_public_key_pem(&key.key).map_err(|e| {
                format!(
                    "key {:?} is not an ECDSA P-256 public key in PEM: {e}",
                    key.key_identifier
                )
            })?;
            keys.insert(key.key_identifier, verifying);
        }
        if keys.is_empty() {
            return Err("it lists no public keys".to_owned());
        }
        Ok(PublicKeys(keys))
    }
}

#[derive(Clone)]
struct Scanning {
    keys: Arc<PublicKeys>,
    auth: Authenticator,
    store: AnyStore,
}

/// The endpoint's route.
pub(crate) fn router(keys: PublicKeys, auth: Authenticator, store: AnyStore) -> Router {
    Router::new()
        .route(PATH, post(report))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Scanning {
            keys: Arc::new(keys),
            auth,
            store,
        })
}

#[derive(Deserialize)]
struct Match {
    token: String,
    #[serde(rename = "type")]
    token_type: String,
    url: String,
    #[serde(default)]
    source: String,
}

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": "secret_scanning_error", "code": code, "message": message}})),
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether `body` carries a valid signature from one of `keys`; why not otherwise.
fn verify(keys: &PublicKeys, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let (Some(id), Some(signature)) = (
        header(headers, "github-public-key-identifier"),
        header(headers, "github-public-key-signature"),
    ) else {
        return Err(
            "the Github-Public-Key-Identifier and Github-Public-Key-Signature headers are required",
        );
    };
    let key = keys.0.get(id).ok_or("unknown public key identifier")?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| "the signature is not base64")?;
    let signature =
        Signature::from_der(&der).map_err(|_| "the signature is not a DER ECDSA signature")?;
    key.verify(body, &signature)
        .map_err(|_| "the signature does not match the body")
}

async fn report(State(state): State<Scanning>, parts: Parts, body: Bytes) -> Response {
    if let Err(why) = verify(&state.keys, &parts.headers, &body) {
        tracing::warn!(why, "secret-scanning report refused");
        return refuse(StatusCode::UNAUTHORIZED, "invalid_signature", why);
    }
    let matches: Vec<Match> = match serde_json::from_slice(&body) {
        Ok(matches) => matches,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON array of {token, type, url, source}",
            );
        }
    };
    if matches.len() > MAX_MATCHES {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_matches",
            "at most 1000 matches per report",
        );
    }
    let client = crate::logging::peer(&parts.extensions).map(|a| a.ip());
    let mut feedback = Vec::with_capacity(matches.len());
    for m in &matches {
        let label = match revoke(&state, m, client).await {
            Ok(true) => "true_positive",
            Ok(false) => "false_positive",
            // GitHub sends the report again later: answer an error, not a wrong label.
            Err(e) => {
                tracing::error!(error = %e, "secret-scanning report: a reported key could not be revoked");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "the key store is unavailable; send the report again",
                );
            }
        };
        feedback.push(json!({
            "token_hash": hex(&Sha256::digest(m.token.as_bytes())),
            "token_type": m.token_type,
            "label": label,
        }));
    }
    (StatusCode::OK, Json(Value::Array(feedback))).into_response()
}

/// Revokes the reported key if it is one of ours; whether it is.
async fn revoke(
    state: &Scanning,
    m: &Match,
    client: Option<std::net::IpAddr>,
) -> Result<bool, hapnd_auth::StoreError> {
    let Ok(key) = ApiKey::parse(m.token.trim()) else {
        return Ok(false);
    };
    let Some(record) = state.store.lookup(&key.hash()).await? else {
        return Ok(false);
    };
    let mut actor =
        Actor::secret_scanning(format!("github secret scanning ({})", m.source), &m.url);
    if let Some(client) = client {
        actor = actor.with_client(client);
    }
    let revoked = state.auth.revoke_as(&record.id, &actor).await?;
    tracing::warn!(key_id = %revoked.id, tenant = ?revoked.tenant, key_hint = ?revoked.hint,
        url = ?m.url, "API key reported leaked by GitHub secret scanning: revoked");
    Ok(true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
