//! Key validation: `ApiKey::parse` never panics, accepts only 46-character keys with a
//! known prefix, round-trips what it accepts, and `redact_keys` leaves no accepted key
//! in its output.
#![no_main]

use hapnd_auth::{ApiKey, KEY_LEN, redact_keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ApiKey::parse(text) {
        assert_eq!(text.len(), KEY_LEN);
        assert!(text.starts_with("sk_live_") || text.starts_with("sk_test_"));
        assert_eq!(key.expose_secret(), text);
        assert!(!format!("{key:?}").contains(text));
        assert!(!redact_keys(text).contains(text));
    }
    let redacted = redact_keys(text);
    for word in redacted.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
        assert!(ApiKey::parse(word).is_err(), "{word} survived redaction");
    }
});
