//! API keys: the format, generation, validation, hashing and the masked hint.
//!
//! A key is `sk_live_` or `sk_test_`, then 32 base62 characters from the OS
//! random generator (about 190 bits), then 6 base62 characters encoding a
//! CRC32 of everything before them: 46 characters in all.
//!
//! ```
//! use hapnd_auth::{ApiKey, Environment};
//!
//! let key = ApiKey::generate(Environment::Live);
//! assert!(key.expose_secret().starts_with("sk_live_"));
//! assert_eq!(key.expose_secret().len(), 46);
//!
//! // Parsing checks prefix, charset, length and checksum.
//! let parsed = ApiKey::parse(key.expose_secret()).unwrap();
//! assert_eq!(parsed.environment(), Environment::Live);
//! assert_eq!(parsed.hash(), key.hash());
//!
//! // Debug never shows the secret.
//! assert!(!format!("{key:?}").contains(key.expose_secret()));
//! ```

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which Hapnd environment a key opens: chosen by the key's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Environment {
    /// `sk_live_` keys: production data.
    Live,
    /// `sk_test_` keys: the sandbox.
    Sandbox,
}

impl Environment {
    /// The key prefix of this environment (`sk_live_` or `sk_test_`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Environment::Live => LIVE_PREFIX,
            Environment::Sandbox => TEST_PREFIX,
        }
    }

    /// The stored name of this environment: `live` or `sandbox`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Sandbox => "sandbox",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEnvironment(String);

impl fmt::Display for UnknownEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown environment {:?}: expected `live` or `sandbox` (or `test`)",
            self.0
        )
    }
}

impl std::error::Error for UnknownEnvironment {}

impl FromStr for Environment {
    type Err = UnknownEnvironment;

    /// Accepts `live`, and `sandbox` or `test` (the key prefix's word), in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("live") {
            Ok(Environment::Live)
        } else if s.eq_ignore_ascii_case("sandbox") || s.eq_ignore_ascii_case("test") {
            Ok(Environment::Sandbox)
        } else {
            Err(UnknownEnvironment(s.chars().take(32).collect()))
        }
    }
}

const LIVE_PREFIX: &str = "sk_live_";
const TEST_PREFIX: &str = "sk_test_";
const PREFIX_LEN: usize = 8;
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// The length of every key, in bytes.
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a well-formed API key. Says nothing of the key itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// The prefix is neither `sk_live_` nor `sk_test_`.
    UnknownPrefix,
    /// The key is not 46 characters long.
    WrongLength,
    /// The key has a character outside base62 after its prefix.
    InvalidCharacter,
    /// The checksum does not match: a typo, a truncation, or not a Hapnd key.
    BadChecksum,
}

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormatError::UnknownPrefix => {
                "API keys start with `sk_live_` (live) or `sk_test_` (sandbox)"
            }
            KeyFormatError::WrongLength => "API keys are 46 characters long",
            KeyFormatError::InvalidCharacter => {
                "API keys contain only letters and digits after the prefix"
            }
            KeyFormatError::BadChecksum => {
                "API key checksum mismatch: the key is mistyped or truncated"
            }
        })
    }
}

impl std::error::Error for KeyFormatError {}

/// The SHA-256 of a whole key, prefix included: the only trace of a key that is stored or cached.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a key string as presented. Prefer [`ApiKey::hash`].
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyHash(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hexadecimal, 64 characters: the form stores and notifications use.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hexadecimal characters.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(KeyHash(out))
    }

    /// Compares in constant time, a machine word at a time.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        let words = |h: &KeyHash| -> [u64; 4] {
            std::array::from_fn(|i| {
                u64::from_ne_bytes(h.0[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
            })
        };
        bool::from(words(self)[..].ct_eq(&words(other)[..]))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash of a 190-bit secret reveals nothing useful; a short prefix is enough to correlate.
        write!(f, "KeyHash({}..)", &self.to_hex()[..12])
    }
}

/// A validated API key. Its `Debug` shows the masked hint only, and it has no `Display`.
#[derive(Clone)]
pub struct ApiKey {
    secret: String,
    environment: Environment,
}

impl ApiKey {
    /// Generates a new key for `environment` from the OS random generator.
    ///
    /// # Panics
    /// If the operating system has no random generator to offer, which no supported
    /// platform lacks.
    pub fn generate(environment: Environment) -> Self {
        let mut secret = String::with_capacity(KEY_LEN);
        secret.push_str(environment.prefix());
        push_random_base62(&mut secret, RANDOM_LEN);
        let checksum = checksum(secret.as_bytes());
        secret.extend(checksum.map(char::from));
        ApiKey {
            secret,
            environment,
        }
    }

    /// Parses and validates a presented key: prefix, length, charset and checksum.
    ///
    /// The error says what is wrong in general terms and never contains the input.
    pub fn parse(presented: &str) -> Result<Self, KeyFormatError> {
        let environment = validate(presented)?;
        Ok(ApiKey {
            secret: presented.to_owned(),
            environment,
        })
    }

    /// The environment the key's prefix selects.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The SHA-256 of the whole key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.secret)
    }

    /// The masked hint shown to people: `sk_live_...a1b2`.
    pub fn hint(&self) -> String {
        hint(&self.secret)
    }

    /// The secret itself: to show once at creation, or to send in a request.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("hint", &self.hint())
            .field("environment", &self.environment)
            .finish()
    }
}

impl FromStr for ApiKey {
    type Err = KeyFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiKey::parse(s)
    }
}

/// Validates a presented key without copying it; returns the environment its prefix selects.
pub(crate) fn validate(presented: &str) -> Result<Environment, KeyFormatError> {
    let bytes = presented.as_bytes();
    let environment = if bytes.starts_with(LIVE_PREFIX.as_bytes()) {
        Environment::Live
    } else if bytes.starts_with(TEST_PREFIX.as_bytes()) {
        Environment::Sandbox
    } else {
        return Err(KeyFormatError::UnknownPrefix);
    };
    if bytes.len() != KEY_LEN {
        return Err(KeyFormatError::WrongLength);
    }
    // No early exit: a well-formed key reads every byte anyway, and the branch-free fold
    // over a fixed 38 bytes vectorises.
    let alphanumeric = bytes[PREFIX_LEN..]
        .iter()
        .fold(true, |ok, b| ok & b.is_ascii_alphanumeric());
    if !alphanumeric {
        return Err(KeyFormatError::InvalidCharacter);
    }
    let (body, sum) = bytes.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(environment)
}

/// The 6 base62 characters encoding the CRC32 of `body`, most significant first. An array,
/// not a `String`: this runs on every request.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(body));
    let mut out = [0u8; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// `N` bytes from the OS random generator.
///
/// # Panics
/// If the operating system has no random generator to offer, which no supported platform
/// lacks.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random generator is unavailable");
    bytes
}

/// Appends `n` base62 characters from the OS random generator, each equally likely.
pub(crate) fn push_random_base62(out: &mut String, n: usize) {
    let mut filled = 0;
    while filled < n {
        // Rejection sampling: 248 is the largest multiple of 62 that fits in a byte.
        for b in random::<48>()
            .into_iter()
            .filter(|b| *b < 248)
            .take(n - filled)
        {
            out.push(BASE62[usize::from(b % 62)] as char);
            filled += 1;
        }
    }
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// `text` with every `sk_live_...` / `sk_test_...` run replaced by its masked hint: for
/// messages that may quote user input (a command-line parser's errors, say).
///
/// ```
/// let key = hapnd_auth::ApiKey::generate(hapnd_auth::Environment::Live);
/// let text = format!("unexpected argument '{}' found", key.expose_secret());
/// let redacted = hapnd_auth::redact_keys(&text);
/// assert!(!redacted.contains(key.expose_secret()));
/// assert!(redacted.contains(&key.hint()));
/// ```
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = [LIVE_PREFIX, TEST_PREFIX]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..at]);
        let run = rest[at + PREFIX_LEN..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let end = at + PREFIX_LEN + run;
        out.push_str(&hint(&rest[at..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `sk_live_...a1b2` for a well-formed key; a fixed mask for anything else.
pub(crate) fn hint(key: &str) -> String {
    let prefix = if key.starts_with(LIVE_PREFIX) {
        LIVE_PREFIX
    } else if key.starts_with(TEST_PREFIX) {
        TEST_PREFIX
    } else {
        return "***".to_owned();
    };
    // Built by hand: this runs on every rejected request, and `format!` costs more than
    // the copy.
    let mut hint = String::with_capacity(PREFIX_LEN + 7);
    hint.push_str(prefix);
    hint.push_str("...");
    // Showing the last 4 of a short string would show most of it.
    if key.len() >= 24 && key.is_char_boundary(key.len() - 4) {
        hint.push_str(&key[key.len() - 4..]);
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_validate_and_differ() {
        let a = ApiKey::generate(Environment::Sandbox);
        let b = ApiKey::generate(Environment::Sandbox);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(validate(a.expose_secret()), Ok(Environment::Sandbox));
        assert!(a.expose_secret().starts_with("sk_test_"));
    }

    #[test]
    fn one_changed_character_fails_the_checksum() {
        let key = ApiKey::generate(Environment::Live);
        let mut s = key.expose_secret().to_owned();
        let c = if s.as_bytes()[10] == b'a' { "b" } else { "a" };
        s.replace_range(10..11, c);
        assert_eq!(validate(&s), Err(KeyFormatError::BadChecksum));
    }

    #[test]
    fn hex_round_trips_and_compares() {
        let h = KeyHash::of("x");
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert!(h.ct_eq(&h));
        assert!(!h.ct_eq(&KeyHash::of("y")));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }

    #[test]
    fn hint_masks() {
        let key = ApiKey::generate(Environment::Live);
        let hint = key.hint();
        assert!(hint.starts_with("sk_live_..."));
        assert_eq!(&hint[11..], &key.expose_secret()[42..]);
        assert_eq!(super::hint("pk_live_abcdefghijklmnopqrstuvwxyz"), "***");
    }

    #[test]
    fn environment_parses() {
        assert_eq!("LIVE".parse(), Ok(Environment::Live));
        assert_eq!("test".parse(), Ok(Environment::Sandbox));
        assert!("prod".parse::<Environment>().is_err());
    }
}
