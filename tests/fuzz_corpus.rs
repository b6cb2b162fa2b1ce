//! The committed fuzz corpora (`fuzz/corpus/`) replayed on stable, through the entry points
//! and with the checks of the targets in `fuzz/fuzz_targets/`: CI runs every input the
//! fuzzer kept, without nightly or libFuzzer. A check changed in a target is changed here.

use std::convert::Infallible;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hapnd_auth::credentials;
use hapnd_auth::{
    ApiKey, AuthErrorKind, Authenticator, ClientAddr, Environment, FailedAttemptLimit, KEY_LEN,
    MemoryKeyStore, NewKey, redact_keys,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

/// Every input of one target's corpus, with its file name. An empty or missing corpus
/// fails: a replay of nothing would pass for the wrong reason.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(
        inputs.len() >= 20,
        "{}: {} inputs",
        dir.display(),
        inputs.len()
    );
    inputs.sort();
    inputs
}

/// `fuzz_targets/credentials.rs`, plus: reading the same bytes from a file gives the same
/// answer as parsing them in memory, so the fuzzed function is the one the command uses.
#[test]
fn credentials_corpus() {
    let dir = tempfile::tempdir().unwrap();
    // The fuzzer has not forged a key's checksum: a valid file joins the corpus here.
    let valid = ApiKey::generate(Environment::Sandbox);
    let valid = format!("{{\"api_key\": \"{}\"}}\n", valid.expose_secret());
    let mut inputs = corpus("credentials");
    inputs.push(("a valid file".to_owned(), valid.into_bytes()));
    let (mut accepted, mut refused) = (0, 0);
    for (name, data) in inputs {
        let secret = key_like(&data);
        let path = dir.path().join(&name);
        let parsed = credentials::parse(&data, &path);
        match &parsed {
            Ok(found) => {
                accepted += 1;
                assert!(!format!("{found:?}").contains(found.key.expose_secret()));
            }
            Err(error) => {
                refused += 1;
                if let Some(secret) = secret.filter(|s| s.len() >= 16) {
                    assert!(!error.to_string().contains(&secret), "{name}: {error}");
                    assert!(!format!("{error:?}").contains(&secret), "{name}");
                }
            }
        }
        // A new file each, 0600 so there is nothing to tighten: rewriting one file in place
        // (a truncation each time) measured ~3 ms an input on a busy disk, a new file each ~0.2 ms.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(&data))
            .unwrap();
        let read = credentials::resolve(None, &path);
        assert_eq!(outcome(&read), outcome(&parsed), "{name}");
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

fn outcome(result: &Result<credentials::Credentials, credentials::CredentialsError>) -> String {
    match result {
        Ok(found) => format!("{:?} from {:?}", found.key.hash(), found.source),
        Err(error) => format!("{error}"),
    }
}

/// The `"api_key"` string of the file, roughly: what must not be echoed.
fn key_like(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let start = text.find("sk_")?;
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

/// `fuzz_targets/key.rs`.
#[test]
fn key_corpus() {
    for (name, data) in corpus("key") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(key) = ApiKey::parse(text) {
            assert_eq!(text.len(), KEY_LEN, "{name}");
            assert!(text.starts_with("sk_live_") || text.starts_with("sk_test_"));
            assert_eq!(key.expose_secret(), text);
            assert!(!format!("{key:?}").contains(text), "{name}");
            assert!(!redact_keys(text).contains(text), "{name}");
        }
        let redacted = redact_keys(text);
        for word in redacted.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            assert!(ApiKey::parse(word).is_err(), "{name}: {word} survived");
        }
    }
}

/// `fuzz_targets/authorization.rs`.
#[tokio::test]
async fn authorization_corpus() {
    let auth = Authenticator::new(MemoryKeyStore::new());
    for (name, data) in corpus("authorization") {
        let Ok(value) = HeaderValue::from_bytes(&data) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        let error = auth
            .authenticate(&headers)
            .await
            .expect_err("an empty store admits nobody");
        assert!(
            matches!(
                error.kind(),
                AuthErrorKind::MissingApiKey
                    | AuthErrorKind::InvalidRequest
                    | AuthErrorKind::InvalidApiKey
            ),
            "{name}: {:?}",
            error.kind()
        );
        assert!(error.kind().status().is_client_error());
        let message = error.to_string();
        if let Some(token) = data.split(|b| *b == b' ' || *b == b'\t').next_back()
            && token.len() >= 20
        {
            assert!(
                !message.as_bytes().windows(token.len()).any(|w| w == token),
                "{name}"
            );
        }
    }
}

type Body = Full<Bytes>;

async fn inner(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    assert!(!req.headers().contains_key(http::header::AUTHORIZATION));
    Ok(Response::new(Body::default()))
}

/// `fuzz_targets/service.rs`: the same decoding of an input into a request.
#[tokio::test]
async fn service_corpus() {
    let auth = Authenticator::builder(MemoryKeyStore::new())
        .throttle_failed_attempts(FailedAttemptLimit::new(1_000_000, Duration::from_millis(1)))
        .build();
    let created = auth
        .create_key(NewKey::new("acme", Environment::Live, "fuzz"))
        .await
        .unwrap();
    let valid = created.key.expose_secret().to_owned();
    for (name, data) in corpus("service") {
        let request = service_request(&data, &valid);
        let presented: Vec<Vec<u8>> = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        let svc = auth.layer().layer(tower::service_fn(inner));
        let response = svc.oneshot(request).await.unwrap();
        let status = response.status();
        assert!(!status.is_server_error(), "{name}: {status}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        for value in presented {
            if let Some(token) = value.split(|&b| b == b' ').next_back()
                && token.len() >= 20
                && token.starts_with(b"sk_")
                && token
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                assert!(!body.windows(token.len()).any(|w| w == token), "{name}");
            }
        }
    }
}

/// Records: name length, name, value length, value; 0xFF in a value becomes the valid key.
fn service_request(data: &[u8], valid: &str) -> Request<Body> {
    let mut request = Request::new(Body::default());
    let mut rest = data;
    while let [name_len, tail @ ..] = rest {
        let (name, tail) = tail.split_at((*name_len as usize % 24).min(tail.len()));
        let Some((value_len, tail)) = tail.split_first() else {
            break;
        };
        let (value, tail) = tail.split_at((*value_len as usize).min(tail.len()));
        rest = tail;
        let name = if name.first() == Some(&b'A') {
            Ok(http::header::AUTHORIZATION)
        } else {
            HeaderName::from_bytes(name)
        };
        let value: Vec<u8> = value
            .iter()
            .flat_map(|&b| {
                if b == 0xFF {
                    valid.as_bytes().to_vec()
                } else {
                    vec![b]
                }
            })
            .collect();
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(&value)) {
            request.headers_mut().append(name, value);
        }
    }
    request
        .extensions_mut()
        .insert(ClientAddr(([192, 0, 2, data.len() as u8], 1).into()));
    request
}

/// No committed input holds a key with a valid checksum, except the marked fixtures
/// (`sk_live_FUZZFIXTURE...`): a key the fuzzer found valid is a generated one, and a
/// committed real-looking key is what secret scanners (and people) must not have to judge.
#[test]
fn no_corpus_input_holds_a_valid_key_but_the_fixtures() {
    let mut found = Vec::new();
    for target in ["authorization", "key", "service", "credentials"] {
        for (name, data) in corpus(target) {
            let text = String::from_utf8_lossy(&data);
            for prefix in ["sk_live_", "sk_test_"] {
                for (at, _) in text.match_indices(prefix) {
                    let Some(candidate) = text.get(at..at + KEY_LEN) else {
                        continue;
                    };
                    if ApiKey::parse(candidate).is_ok() && !candidate.contains("FUZZFIXTURE") {
                        found.push(format!("{target}/{name}: {}...", &candidate[..12]));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "checksum-valid keys in the corpus: {found:?}"
    );
}
