//! The `serde` feature: how identities and records look when serialized. Nothing here can
//! serialize a key: [`ApiKey`](crate::ApiKey) and [`CreatedKey`](crate::CreatedKey) have no
//! `Serialize`, and a record carries the key's hash and masked hint only.
//!
//! - [`Environment`]: `"live"` or `"sandbox"`.
//! - [`KeyId`]: its text, `"key_..."`.
//! - [`KeyHash`]: 64 lower-case hexadecimal characters.
//! - [`Principal`]: `{"tenant", "environment", "key_id", "key_name", "key_hint", "scopes"}`
//!   (`scopes` a list, empty for a key with full access; never the metadata, which a
//!   serialized principal could carry into a log)
//!   (serialize only: principals come from the layer, or `Principal::for_test`).
//! - [`KeyRecord`](crate::KeyRecord): its fields; times as UTC unix milliseconds, the
//!   precision the stores keep; `scopes` a list, `metadata` the object (or `null`),
//!   `rate_limit` its text (`"100/s,burst=200"`, or `null`). The three may be absent when
//!   deserializing (a record serialized before they existed).
//! - [`Metadata`](crate::Metadata): the JSON object itself.
//! - [`RateLimit`](crate::RateLimit): its text, `"100/s,burst=200"`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{Deserialize, Deserializer, Error as _};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::key::{Environment, KeyHash};
use crate::principal::Principal;
use crate::store::{KeyId, Metadata, RateLimit};

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Metadata::from_value(&value).map_err(D::Error::custom)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

impl Serialize for Environment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(KeyId::new)
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        KeyHash::from_hex(&text)
            .ok_or_else(|| D::Error::custom("a key hash is 64 hexadecimal characters"))
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Principal", 6)?;
        out.serialize_field("tenant", self.tenant())?;
        out.serialize_field("environment", &self.environment())?;
        out.serialize_field("key_id", self.key_id())?;
        out.serialize_field("key_name", self.key_name())?;
        out.serialize_field("key_hint", self.key_hint())?;
        out.serialize_field("scopes", &self.scopes().collect::<Vec<_>>())?;
        out.end()
    }
}

// The same conversion as the SQL stores' (`store::sql`), which exist only with their features.
fn to_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// `SystemTime` as UTC unix milliseconds, for `#[serde(with)]`.
pub(crate) mod unix_ms {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(to_ms(*at))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        i64::deserialize(d).map(from_ms)
    }

    /// The same for an `Option<SystemTime>`: `null` when absent.
    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            at: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            at.map(to_ms).serialize(s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Ok(Option::<i64>::deserialize(d)?.map(from_ms))
        }
    }
}
