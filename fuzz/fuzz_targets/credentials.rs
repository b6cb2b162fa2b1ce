//! The CLI's credentials file reader on arbitrary file contents, in memory (what
//! `credentials::resolve` does once it has read the file): no panic, and neither an error
//! nor the credentials' `Debug` shows the key the file held.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = serde_key(data);
    match hapnd_auth::credentials::parse(data, Path::new("config.json")) {
        Ok(credentials) => {
            let shown = format!("{credentials:?}");
            assert!(!shown.contains(credentials.key.expose_secret()));
        }
        Err(error) => {
            if let Some(secret) = secret.filter(|s| s.len() >= 16) {
                assert!(!error.to_string().contains(&secret), "{error}");
                assert!(!format!("{error:?}").contains(&secret));
            }
        }
    }
});

/// The `"api_key"` string of the file, roughly: what must not be echoed.
fn serde_key(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let start = text.find("sk_")?;
    Some(text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}
