//! Durations in configuration: integer seconds (`60`) or humantime strings (`"90s"`, `"5m"`,
//! `"1h30m"`); for TTLs also `"never"`.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

struct DurationVisitor {
    never_allowed: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.never_allowed {
            f.write_str("seconds as an integer, a duration such as \"90s\" or \"5m\", or \"never\"")
        } else {
            f.write_str("seconds as an integer, or a duration such as \"90s\" or \"5m\"")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Duration::from_secs(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(|v| Some(Duration::from_secs(v)))
            .map_err(|_| E::custom(format!("a duration cannot be negative ({v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        if self.never_allowed && v.eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        if let Ok(secs) = v.parse::<u64>() {
            return Ok(Some(Duration::from_secs(secs)));
        }
        humantime::parse_duration(v).map(Some).map_err(|e| {
            E::custom(format!(
                "`{v}` is not a duration ({e}); write e.g. 30s, 5m or 1h"
            ))
        })
    }
}

fn text(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

/// A required duration.
pub(crate) mod required {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor {
            never_allowed: false,
        })?
        .ok_or_else(|| de::Error::custom("\"never\" is not allowed here"))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(d))
    }
}

/// An optional duration, `None` written as `"never"` (TTLs).
pub(crate) mod never {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor {
            never_allowed: true,
        })
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&text(d)),
            None => s.serialize_str("never"),
        }
    }
}

/// An optional duration, absent when unset.
pub(crate) mod optional {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        required::deserialize(d).map(Some)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&text(d)),
            None => s.serialize_none(),
        }
    }
}

/// A ttl that may be absent: absent is `None`, `"never"` is `Some(None)`.
pub(crate) mod ttl_override {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        never::deserialize(d).map(Some)
    }

    pub(crate) fn serialize<S: Serializer>(
        d: &Option<Option<Duration>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_none(),
            Some(inner) => never::serialize(inner, s),
        }
    }
}
