//! What a key may do besides open its environment: its scopes, its metadata and its rate
//! limit ([`Metadata`], [`RateLimit`], and the scope grammar).
//!
//! All three are fixed when the key is created and copied by rotation. A key without
//! scopes has full access (what every key had before scopes existed); one without a rate
//! limit is not limited.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use super::StoreError;

/// The most scopes one key carries.
pub const MAX_SCOPES: usize = 32;
/// The longest scope, in bytes (scopes are ASCII).
pub const MAX_SCOPE_LEN: usize = 64;
/// The largest metadata object, serialized compactly, in bytes.
pub const MAX_METADATA_LEN: usize = 4096;

/// Whether `scope` follows the scope grammar: `^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)*$`, at
/// most [`MAX_SCOPE_LEN`] characters. `events:read`, `billing:invoices:write`,
/// `admin`; not `Events`, `events:`, `:read`, `events read`, `events:*`.
///
/// ```
/// use hapnd_auth::is_valid_scope;
///
/// assert!(is_valid_scope("events:read"));
/// assert!(!is_valid_scope("events:*"));
/// assert!(!is_valid_scope("Events:read"));
/// ```
pub fn is_valid_scope(scope: &str) -> bool {
    scope.len() <= MAX_SCOPE_LEN
        && scope.split(':').all(|part| {
            let mut bytes = part.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_lowercase())
                && bytes
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// Checks a key's scopes: each of the grammar ([`is_valid_scope`]), at most
/// [`MAX_SCOPES`], no duplicates.
pub(crate) fn check_scopes(scopes: &[String]) -> Result<(), StoreError> {
    if scopes.len() > MAX_SCOPES {
        return Err(StoreError::invalid(format!(
            "a key carries at most {MAX_SCOPES} scopes, not {}",
            scopes.len()
        )));
    }
    for (i, scope) in scopes.iter().enumerate() {
        if !is_valid_scope(scope) {
            return Err(StoreError::invalid(format!(
                "invalid scope {:?}: a scope is lower-case words of letters, digits, `_` \
                 and `-`, each starting with a letter, joined by `:` (`events:read`), at \
                 most {MAX_SCOPE_LEN} characters",
                shown(scope)
            )));
        }
        if scopes[..i].contains(scope) {
            return Err(StoreError::invalid(format!(
                "scope {scope:?} is given twice"
            )));
        }
    }
    Ok(())
}

/// At most the first 80 characters of a refused value, for an error message.
fn shown(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A key's metadata: a JSON object of at most [`MAX_METADATA_LEN`] bytes (compact
/// serialization), for the handlers (`{"plan": "pro", "owner": "team-billing"}`).
///
/// Never logged: its `Debug` shows its size only, and no error message quotes it.
///
/// ```
/// use hapnd_auth::Metadata;
///
/// let meta = Metadata::parse(r#"{ "plan": "pro" }"#).unwrap();
/// assert_eq!(meta.as_json(), r#"{"plan":"pro"}"#);
/// assert_eq!(meta.to_value()["plan"], "pro");
/// assert_eq!(format!("{meta:?}"), "Metadata(14 bytes)");
/// assert!(Metadata::parse("[1, 2]").is_err()); // an object, not any JSON
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata(Box<str>);

impl Metadata {
    /// Parses and checks `json`: a JSON object that is at most [`MAX_METADATA_LEN`] bytes
    /// once written compactly. [`StoreErrorKind::Invalid`](crate::StoreErrorKind::Invalid)
    /// otherwise, with a message that does not quote the input.
    pub fn parse(json: &str) -> Result<Self, StoreError> {
        // Longer input cannot shrink below the bound by more than its whitespace; parse
        // nothing huge.
        if json.len() > 16 * MAX_METADATA_LEN {
            return Err(too_large());
        }
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            StoreError::invalid(format!(
                "key metadata is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Self::from_value(&value)
    }

    /// Checks `value` (an object, at most [`MAX_METADATA_LEN`] bytes written compactly).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, StoreError> {
        if !value.is_object() {
            return Err(StoreError::invalid(
                "key metadata must be a JSON object (`{\"plan\": \"pro\"}`)".to_owned(),
            ));
        }
        let text = value.to_string();
        if text.len() > MAX_METADATA_LEN {
            return Err(too_large());
        }
        Ok(Metadata(text.into_boxed_str()))
    }

    /// The object as compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The object, parsed (each call parses it again).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is the empty object `{}`.
    pub fn is_empty(&self) -> bool {
        &*self.0 == "{}"
    }
}

fn too_large() -> StoreError {
    StoreError::invalid(format!(
        "key metadata is larger than {MAX_METADATA_LEN} bytes"
    ))
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({} bytes)", self.0.len())
    }
}

/// A key's rate limit: `requests` per `period`, with bursts of up to `burst` (GCRA: one
/// request comes back every `period / requests`, and at most `burst` can be spent at once).
///
/// Written `100/s`, `100/s,burst=200`, `5000/h`, `10/30s`: a count, `/`, a period of whole
/// seconds (`s`, `m`, `h`, `d`, optionally with a multiplier), and a burst (default: the
/// count). Counts and bursts are 1 to 1,000,000,000; periods 1 s to 1 day × 365.
///
/// ```
/// use std::time::Duration;
/// use hapnd_auth::RateLimit;
///
/// let limit: RateLimit = "100/s,burst=200".parse().unwrap();
/// assert_eq!((limit.requests(), limit.period(), limit.burst()), (100, Duration::from_secs(1), 200));
/// assert_eq!(limit.to_string(), "100/s,burst=200");
/// assert_eq!("10/30s".parse::<RateLimit>().unwrap().burst(), 10);
/// assert!("0/s".parse::<RateLimit>().is_err());
/// assert!("100/fortnight".parse::<RateLimit>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: NonZeroU32,
    period_secs: NonZeroU32,
    burst: NonZeroU32,
}

const MAX_COUNT: u32 = 1_000_000_000;
const MAX_PERIOD_SECS: u32 = 365 * 86_400;

impl RateLimit {
    /// `requests` per `period` (whole seconds), bursts of `burst`; `None` outside the
    /// bounds above.
    pub fn new(requests: u32, period: Duration, burst: u32) -> Option<Self> {
        let secs = u32::try_from(period.as_secs()).ok()?;
        if period.subsec_nanos() != 0
            || secs > MAX_PERIOD_SECS
            || requests > MAX_COUNT
            || burst > MAX_COUNT
        {
            return None;
        }
        Some(RateLimit {
            requests: NonZeroU32::new(requests)?,
            period_secs: NonZeroU32::new(secs)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// Requests per period.
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_secs.get().into())
    }

    /// The period in seconds: the `w` of the `RateLimit-Policy` header.
    pub fn period_secs(&self) -> u32 {
        self.period_secs.get()
    }

    /// The most requests at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// How often one request comes back: `period / requests`, at least 1 ns.
    pub fn interval(&self) -> Duration {
        (self.period() / self.requests.get()).max(Duration::from_nanos(1))
    }

    /// How long an idle key takes to get its whole burst back.
    pub fn refill(&self) -> Duration {
        self.interval().saturating_mul(self.burst.get())
    }

    /// The GCRA quota.
    pub(crate) fn quota(&self) -> governor::Quota {
        governor::Quota::with_period(self.interval())
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period_secs.get();
        write!(f, "{}/", self.requests)?;
        match secs {
            1 => f.write_str("s")?,
            60 => f.write_str("m")?,
            3600 => f.write_str("h")?,
            86_400 => f.write_str("d")?,
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400)?,
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600)?,
            s if s % 60 == 0 => write!(f, "{}m", s / 60)?,
            s => write!(f, "{s}s")?,
        }
        write!(f, ",burst={}", self.burst)
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateLimit({self})")
    }
}

impl FromStr for RateLimit {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        let bad = || {
            StoreError::invalid(format!(
                "invalid rate limit {:?}: write COUNT/PERIOD[,burst=N] with a period of \
                 s, m, h or d (optionally with a multiplier: 30s), a count and burst of 1 \
                 to {MAX_COUNT}, and a period of at most 365d: `100/s,burst=200`",
                shown(text)
            ))
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, burst)) => {
                let burst = burst.trim().strip_prefix("burst=").ok_or_else(bad)?;
                (rate.trim(), Some(number(burst).ok_or_else(bad)?))
            }
            None => (text.trim(), None),
        };
        let (count, period) = rate.split_once('/').ok_or_else(bad)?;
        let requests = number(count).ok_or_else(bad)?;
        let unit_at = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (multiplier, unit) = period.split_at(unit_at);
        let multiplier = if multiplier.is_empty() {
            1
        } else {
            number(multiplier).ok_or_else(bad)?
        };
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let secs = multiplier.checked_mul(unit).ok_or_else(bad)?;
        RateLimit::new(
            requests,
            Duration::from_secs(secs.into()),
            burst.unwrap_or(requests),
        )
        .ok_or_else(bad)
    }
}

/// A decimal number without sign or leading zeros' ambiguity, as a `u32`.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_grammar() {
        for good in ["a", "events:read", "billing:invoices:write", "a-b_c9:d"] {
            assert!(is_valid_scope(good), "{good}");
        }
        let long = "a".repeat(MAX_SCOPE_LEN + 1);
        for bad in [
            "",
            "Events",
            "events:",
            ":read",
            "events read",
            "events:*",
            "9a",
            "a::b",
            "é",
            "a:-b",
            &long,
        ] {
            assert!(!is_valid_scope(bad), "{bad}");
        }
        assert!(is_valid_scope(&long[1..]));
    }

    #[test]
    fn scope_lists_are_bounded_and_without_duplicates() {
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert!(check_scopes(&many[..MAX_SCOPES]).is_ok());
        assert!(check_scopes(&many).is_err());
        assert!(check_scopes(&["a".into(), "a".into()]).is_err());
        assert!(check_scopes(&["a b".into()]).is_err());
    }

    #[test]
    fn metadata_is_a_bounded_object() {
        assert!(Metadata::parse("{}").unwrap().is_empty());
        assert!(Metadata::parse("\"text\"").is_err());
        assert!(Metadata::parse("{").is_err());
        let fits = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_METADATA_LEN - 8));
        assert_eq!(Metadata::parse(&fits).unwrap().len(), MAX_METADATA_LEN);
        let over = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_METADATA_LEN - 7));
        let err = Metadata::parse(&over).unwrap_err();
        assert!(!err.to_string().contains("xxx"), "{err}");
        // An error never quotes the input.
        let err = Metadata::parse(r#"{"secret": tru}"#).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn rate_limits_parse_and_print_back() {
        for (text, canonical) in [
            ("100/s", "100/s,burst=100"),
            ("100/s,burst=200", "100/s,burst=200"),
            ("100/1s, burst=5", "100/s,burst=5"),
            ("10/30s", "10/30s,burst=10"),
            ("5000/h", "5000/h,burst=5000"),
            ("1/90m", "1/90m,burst=1"),
            ("7/2d", "7/2d,burst=7"),
        ] {
            let limit: RateLimit = text.parse().unwrap();
            assert_eq!(limit.to_string(), canonical);
            assert_eq!(canonical.parse::<RateLimit>().unwrap(), limit);
        }
        for bad in [
            "",
            "100",
            "/s",
            "0/s",
            "100/0s",
            "100/s,burst=0",
            "100/w",
            "-1/s",
            "1.5/s",
            "100/s,burst=",
            "100/s,bust=2",
            "1000000001/s",
            "1/366d",
            "99999999999/s",
            "100/s,burst=200,x",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        let limit: RateLimit = "100/s,burst=200".parse().unwrap();
        assert_eq!(limit.interval(), Duration::from_millis(10));
        assert_eq!(limit.refill(), Duration::from_secs(2));
    }
}
