//! `hapnd-auth login` and `hapnd-auth whoami`: the client side.

use std::io::IsTerminal;
use std::path::PathBuf;

use bytes::Bytes;
use hapnd_auth::{ApiKey, credentials};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) fn login(key: Option<String>, config: Option<PathBuf>) -> Result<(), String> {
    let key = match key.filter(|k| k != "-") {
        Some(key) => key,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("API key (sk_live_... or sk_test_...): ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
            line
        }
    };
    let key = ApiKey::parse(key.trim()).map_err(|e| format!("refusing this key: {e}"))?;
    let path = match config {
        Some(path) => path,
        None => credentials::default_path().map_err(|e| e.to_string())?,
    };
    credentials::save(&key, &path).map_err(|e| format!("cannot save the key: {e}"))?;
    println!(
        "saved {} key {} to {}",
        key.environment(),
        key.hint(),
        path.display()
    );
    Ok(())
}

pub(crate) async fn whoami(url: &str) -> Result<(), String> {
    let creds = credentials::load().map_err(|e| e.to_string())?;
    let uri: http::Uri = format!("{}/v1/whoami", url.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("invalid --url {url:?}: {e}"))?;
    let request = http::Request::get(uri)
        .header(
            "authorization",
            format!("Bearer {}", creds.key.expose_secret()),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| format!("{url} did not answer within 10 s"))?
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer from {url}: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    if status.is_success() {
        println!("{body}");
        Ok(())
    } else {
        Err(format!("{url} answered {status}: {body}"))
    }
}
