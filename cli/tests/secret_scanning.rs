//! GitHub's secret-scanning partner protocol through the real gateway, with an ECDSA P-256
//! key pair the test generates: a signed report revokes within the request, a forged,
//! unknown-key, malformed or oversize one revokes nothing, and a replay is harmless.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Sandbox, Server, request};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::{Digest, Sha256};

const PATH: &str = "/auth/secret-scanning/github";
const KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

fn key_pair() -> SigningKey {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return key;
        }
    }
}

fn meta_file(sandbox: &Sandbox, key: &SigningKey) -> std::path::PathBuf {
    let pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let meta = serde_json::json!({"public_keys": [
        {"key_identifier": KEY_ID, "key": pem, "is_current": true}
    ]});
    let path = sandbox.dir.join("github-keys.json");
    std::fs::write(&path, meta.to_string()).unwrap();
    path
}

fn sign(key: &SigningKey, body: &str) -> String {
    let signature: Signature = key.sign(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

fn post(server: &Server, key_id: &str, signature: &str, body: &str) -> common::Response {
    request(
        server.addr,
        "POST",
        PATH,
        &[
            ("Content-Type", "application/json"),
            ("Github-Public-Key-Identifier", key_id),
            ("Github-Public-Key-Signature", signature),
        ],
        body,
    )
}

fn whoami(server: &Server, key: &str) -> u16 {
    server.public_get("/v1/whoami", key).status
}

fn create(sandbox: &Sandbox, name: &str) -> (String, String) {
    let out = sandbox
        .command()
        .args([
            "keys", "create", "--tenant", "acme", "--env", "live", "--name", name,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_owned();
    (key, id)
}

fn events(sandbox: &Sandbox, id: &str) -> Vec<serde_json::Value> {
    let out = sandbox
        .command()
        .args(["keys", "events", "--key", id, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_signed_report_revokes_at_once_and_nothing_else_does() {
    let sandbox = Sandbox::new("scanning");
    let github = key_pair();
    let keys = meta_file(&sandbox, &github);
    let (leaked, id) = create(&sandbox, "leaked");
    let (bystander, bystander_id) = create(&sandbox, "bystander");
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &[
            "--no-demo-key",
            "--secret-scanning-keys",
            keys.to_str().unwrap(),
        ],
    );
    assert_eq!(whoami(&server, &leaked), 200, "now cached");
    let url = "https://github.com/acme/app/blob/0123abc/.env";
    // A false positive: our prefix, but no key of ours (and no valid checksum). Built here,
    // so the repository holds no key-shaped literal for scanners to report.
    let not_ours = format!("sk_live_{}", "notarealkey".repeat(3));
    let body = serde_json::json!([
        {"token": leaked, "type": "hapnd_api_key", "url": url, "source": "content"},
        {"token": not_ours, "type": "hapnd_api_key",
         "url": "https://github.com/x/y", "source": "content"}
    ])
    .to_string();

    // Refused, and nothing revoked: no signature, a forged one (another key pair), an
    // unknown key id, a signature of another body, garbage.
    let forger = key_pair();
    for (key_id, signature) in [
        (KEY_ID.to_owned(), String::new()),
        (KEY_ID.to_owned(), sign(&forger, &body)),
        ("unknown".to_owned(), sign(&github, &body)),
        (KEY_ID.to_owned(), sign(&github, "[]")),
        (KEY_ID.to_owned(), "bm90IGEgc2lnbmF0dXJl".to_owned()),
    ] {
        let r = post(&server, &key_id, &signature, &body);
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(!r.body.contains(&leaked));
    }
    // Signed but malformed; signed but oversize.
    let malformed = r#"{"token": "x"}"#;
    assert_eq!(
        post(&server, KEY_ID, &sign(&github, malformed), malformed).status,
        400
    );
    let oversize = format!("[{}]", " ".repeat(300 * 1024));
    assert_eq!(
        post(&server, KEY_ID, &sign(&github, &oversize), &oversize).status,
        413
    );
    assert_eq!(
        whoami(&server, &leaked),
        200,
        "no refused report revoked the key"
    );
    assert_eq!(events(&sandbox, &id).len(), 1, "and none reached the trail");

    // The real report: the key is rejected as soon as the answer arrives.
    let r = post(&server, KEY_ID, &sign(&github, &body), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server.public_get("/v1/whoami", &leaked).code(),
        "api_key_revoked"
    );
    let feedback = r.json();
    let hash = |t: &str| {
        Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(feedback[0]["token_hash"], hash(&leaked));
    assert_eq!(feedback[0]["token_type"], "hapnd_api_key");
    assert_eq!(feedback[0]["label"], "true_positive");
    assert_eq!(feedback[1]["label"], "false_positive");
    assert!(!r.body.contains(&leaked));
    assert_eq!(whoami(&server, &bystander), 200, "only the reported key");

    let trail = events(&sandbox, &id);
    let kinds: Vec<&str> = trail.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["revoked", "reported_leaked", "created"]);
    for e in &trail[..2] {
        assert_eq!(e["actor_kind"], "secret_scanning");
        assert_eq!(e["detail"], url);
        assert_eq!(e["client"], "127.0.0.1");
    }

    // A replay: harmless. Same answer, still revoked once, the bystander untouched.
    std::thread::sleep(Duration::from_millis(20));
    let again = post(&server, KEY_ID, &sign(&github, &body), &body);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()[0]["label"], "true_positive");
    let trail = events(&sandbox, &id);
    let revocations = trail.iter().filter(|e| e["event"] == "revoked").count();
    assert_eq!(revocations, 1);
    assert_eq!(events(&sandbox, &bystander_id).len(), 1);
    assert!(
        !sandbox.logs().contains(&leaked),
        "the key never reaches a log"
    );
}

#[test]
fn without_the_keys_file_there_is_no_endpoint_and_a_bad_file_stops_the_start() {
    let sandbox = Sandbox::new("scanning-off");
    let server = Server::spawn_with(&sandbox, sandbox.command(), &["--no-demo-key"]);
    let r = post(&server, KEY_ID, "x", "[]");
    assert_eq!(r.status, 404, "no such route: {}", r.body);
    drop(server);
    std::fs::write(sandbox.dir.join("bad.json"), r#"{"public_keys": []}"#).unwrap();
    let out = sandbox
        .command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--secret-scanning-keys")
        .arg(sandbox.dir.join("bad.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists no public keys"));
}

/// Under `serve --upstream` the endpoint is still the gateway's own: a signed report, a
/// forged one and a malformed one are answered by the gateway, and the backend, which
/// answers anything that reaches it with 299, sees none of them (a report carries keys).
#[test]
fn under_upstream_no_report_reaches_the_backend() {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let reached = std::sync::Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    std::thread::spawn(move || {
        for stream in backend.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(b"HTTP/1.1 299 Reached\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let sandbox = Sandbox::new("scanning-upstream");
    let github = key_pair();
    let keys = meta_file(&sandbox, &github);
    let (leaked, id) = create(&sandbox, "leaked");
    let server = Server::spawn_with(
        &sandbox,
        sandbox.command(),
        &[
            "--no-demo-key",
            "--upstream",
            &format!("http://{backend_addr}"),
            "--secret-scanning-keys",
            keys.to_str().unwrap(),
        ],
    );
    // The backend is there and answers forwarded requests.
    assert_eq!(server.public_get("/anything", &leaked).status, 299);
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    let body = serde_json::json!([
        {"token": leaked, "type": "hapnd_api_key", "url": "https://github.com/a/b", "source": "content"}
    ])
    .to_string();
    let forged = post(&server, KEY_ID, &sign(&key_pair(), &body), &body);
    assert_eq!(forged.status, 401, "{}", forged.body);
    let malformed = "{}";
    assert_eq!(
        post(&server, KEY_ID, &sign(&github, malformed), malformed).status,
        400
    );
    let signed = post(&server, KEY_ID, &sign(&github, &body), &body);
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert!(signed.body.contains("true_positive"), "{}", signed.body);
    assert_eq!(
        server.public_get("/v1/whoami", &leaked).code(),
        "api_key_revoked"
    );
    assert!(
        events(&sandbox, &id)
            .iter()
            .any(|e| e["event"] == "revoked")
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "a report reached the backend"
    );
}
