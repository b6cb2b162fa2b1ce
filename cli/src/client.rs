//! The client side: `login`, `logout`, `status` and `whoami`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use hapnd_auth::{ApiKey, credentials};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::Exit;
use crate::output::{data, esc};

/// A whoami answer is a few hundred bytes; anything past this is not one.
const MAX_BODY: usize = 64 * 1024;
/// The exit code for "the gateway refused the key", as `gh` uses it.
const AUTH_FAILED: u8 = 4;

/// Where the gateway is and where the saved key lives: what every client command shares.
#[derive(clap::Args, Clone)]
pub(crate) struct Gateway {
    /// The gateway's base URL; `host:port` alone means http://host:port.
    #[arg(
        long,
        env = "HAPND_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) url: String,
    /// How long the whole exchange with the gateway may take (connect, TLS, answer, body).
    #[arg(long, default_value = "10s", value_parser = crate::time::parse_duration)]
    pub(crate) timeout: Duration,
}

/// `--config`, for every command that reads or writes the saved key.
#[derive(clap::Args, Clone)]
pub(crate) struct Config {
    /// The key file (default ~/.hapnd/config.json).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

impl Config {
    fn path(&self) -> Result<PathBuf, String> {
        match &self.config {
            Some(path) => Ok(path.clone()),
            None => credentials::default_path().map_err(|e| e.to_string()),
        }
    }

    /// The key in use: `HAPND_API_KEY` if set, else the file.
    fn load(&self) -> Result<credentials::Credentials, String> {
        let path = self.path()?;
        let from_env = std::env::var(credentials::ENV_VAR).ok();
        credentials::resolve(from_env.as_deref(), &path).map_err(|e| e.to_string())
    }
}

fn env_key_set() -> bool {
    std::env::var_os(credentials::ENV_VAR).is_some_and(|v| !v.is_empty())
}

pub(crate) async fn login(
    key: Option<String>,
    no_verify: bool,
    gateway: Gateway,
    config: Config,
) -> Result<(), Exit> {
    let text = match key.filter(|k| k != "-") {
        Some(key) => key,
        None => read_key()?,
    };
    let text = text.trim();
    // Pasted from a curl line or a header dump.
    let text = match text.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => text[7..].trim_start(),
        _ => text,
    };
    let key = ApiKey::parse(text).map_err(|e| format!("refusing this key: {e}"))?;
    if !no_verify {
        let who = call_whoami(&gateway, &key).await.map_err(|e| Exit {
            code: e.code,
            message: format!(
                "{}; nothing saved (--no-verify saves without checking)",
                e.message
            ),
        })?;
        eprintln!("the gateway knows this key: {}", describe(&who));
    }
    let path = config.path()?;
    credentials::save(&key, &path).map_err(|e| format!("cannot save the key: {e}"))?;
    eprintln!(
        "saved {} key {} to {}",
        key.environment(),
        key.hint(),
        path.display()
    );
    if env_key_set() {
        eprintln!(
            "warning: {} is set in this shell and wins over the saved key; unset it to use \
             the key just saved",
            credentials::ENV_VAR
        );
    }
    Ok(())
}

/// The key from standard input: typed without echo in a terminal, else read to its end.
fn read_key() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("API key (sk_live_... or sk_test_..., not shown): ")
            .map_err(|e| format!("cannot read the key from the terminal: {e}"));
    }
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
    if text.trim().is_empty() {
        return Err(
            "stdin was empty: pipe the key in (`hapnd-auth login - < file`), or run \
                    `hapnd-auth login` in a terminal and paste it"
                .to_owned(),
        );
    }
    Ok(text)
}

pub(crate) fn logout(config: Config) -> Result<(), String> {
    let path = config.path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("removed the saved key {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no saved key at {}", path.display());
        }
        Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
    }
    if env_key_set() {
        eprintln!(
            "warning: {} is still set in this shell: client tools keep using it",
            credentials::ENV_VAR
        );
    }
    Ok(())
}

pub(crate) fn status(config: Config, json: bool) -> Result<(), String> {
    let creds = config.load()?;
    let (source, path) = match &creds.source {
        credentials::Source::Environment => (credentials::ENV_VAR.to_owned(), None),
        credentials::Source::File(path) => (path.display().to_string(), Some(path)),
    };
    if json {
        data!(
            "{}",
            serde_json::json!({
                "hint": creds.key.hint(),
                "environment": creds.key.environment().as_str(),
                "source": if path.is_some() { "file" } else { "environment" },
                "path": path.map(|p| p.display().to_string()),
            })
        );
    } else {
        data!(
            "using {} key {} from {source}",
            creds.key.environment(),
            creds.key.hint()
        );
    }
    Ok(())
}

pub(crate) async fn whoami(gateway: Gateway, config: Config, json: bool) -> Result<(), Exit> {
    let creds = config.load()?;
    let who = call_whoami(&gateway, &creds.key).await?;
    if json {
        data!("{who}");
    } else {
        for field in ["tenant", "environment", "key_id", "key_name"] {
            data!("{field}: {}", esc(who[field].as_str().unwrap_or("?")));
        }
        let from = match &creds.source {
            credentials::Source::Environment => credentials::ENV_VAR.to_owned(),
            credentials::Source::File(path) => path.display().to_string(),
        };
        eprintln!("key {} from {from}", creds.key.hint());
    }
    Ok(())
}

fn describe(who: &serde_json::Value) -> String {
    let field = |name: &str| esc(who[name].as_str().unwrap_or("?"));
    format!(
        "tenant {}, {}, key {} ({})",
        field("tenant"),
        field("environment"),
        field("key_id"),
        field("key_name")
    )
}

/// `url` with a scheme: `localhost:8080` means `http://localhost:8080`.
fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// `url` without a `user:password@` part, for messages.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `GET /v1/whoami` with `key`: the parsed identity, or why not.
async fn call_whoami(gateway: &Gateway, key: &ApiKey) -> Result<serde_json::Value, Exit> {
    let base = base_url(&gateway.url);
    let shown = esc(&without_userinfo(&base));
    let uri: http::Uri = format!("{base}/v1/whoami")
        .parse()
        .map_err(|e| format!("invalid gateway URL {shown}: {e}"))?;
    let request = http::Request::get(uri)
        .header("authorization", format!("Bearer {}", key.expose_secret()))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            format!(
                "cannot reach the gateway at {shown}: {}; is `hapnd-auth serve` running \
                 there? Point --url (or HAPND_URL) at it",
                root_cause(&e)
            )
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer from {shown}: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let limit = gateway.timeout;
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("{shown} did not answer within {limit:?} (--timeout)"))??;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if status.is_success() {
        return match parsed {
            Some(who) if who["tenant"].is_string() => Ok(who),
            _ => Err(format!(
                "{shown} answered {status}, but not with a whoami answer: is it a \
                              hapnd-auth gateway?"
            )
            .into()),
        };
    }
    let code = parsed
        .as_ref()
        .and_then(|p| p["error"]["code"].as_str())
        .map(esc);
    let message = parsed
        .as_ref()
        .and_then(|p| p["error"]["message"].as_str())
        .map(esc);
    let why = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => "no error details".to_owned(),
    };
    let message = format!("{shown} answered {status} for key {}: {why}", key.hint());
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        Err(Exit {
            code: AUTH_FAILED,
            message,
        })
    } else {
        Err(message.into())
    }
}

/// The innermost error: "connection refused" rather than "client error (Connect)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::{base_url, without_userinfo};

    #[test]
    fn urls_get_a_scheme_and_lose_their_password_in_messages() {
        assert_eq!(base_url("localhost:8080/"), "http://localhost:8080");
        assert_eq!(base_url("https://gw.example"), "https://gw.example");
        assert_eq!(
            without_userinfo("https://u:s3cret@gw.example:8443/x@y"),
            "https://gw.example:8443/x@y"
        );
        assert_eq!(without_userinfo("http://127.0.0.1:1"), "http://127.0.0.1:1");
    }
}
