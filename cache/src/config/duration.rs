//! Durations in configuration: integer seconds (`60`) or humantime strings (`"90s"`, `"5m"`,
//! `"1h30m"`); for TTLs also `"never"`. Each kind has a range, checked when the
//! configuration loads and again by validation (for values set in code).

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// The values a kind of duration may take.
pub(crate) struct Range {
    min: Duration,
    max: Duration,
    /// What is out of range, for messages: "a ttl", "a timeout or wait".
    what: &'static str,
}

/// Lifetimes: `default_ttl`, a function's `ttl`, `stale_if_error`, `time_to_idle`. Ten years
/// is longer than any cache entry needs, and well inside what every backend can count.
pub(crate) const TTL: Range = Range {
    min: Duration::from_millis(1),
    max: Duration::from_secs(10 * 31_557_600),
    what: "a ttl",
};

/// Timeouts and waits: `connect_timeout`, `op_timeout`, `call_budget`, `fill_wait`, `lock_ttl`,
/// `lock_wait`, `breaker_open_for`, and the near cache's ttl cap `near.ttl`.
pub(crate) const WAIT: Range = Range {
    min: Duration::from_millis(1),
    max: Duration::from_secs(86_400),
    what: "a timeout or wait",
};

impl Range {
    /// `Err` with a message naming the range when `d` is outside it.
    pub(crate) fn check(&self, d: Duration) -> Result<(), String> {
        if (self.min..=self.max).contains(&d) {
            return Ok(());
        }
        Err(format!(
            "{} is out of range: {} is between {} and {}",
            text(&d),
            self.what,
            text(&self.min),
            text(&self.max)
        ))
    }
}

struct DurationVisitor {
    never_allowed: bool,
    range: &'static Range,
}

impl DurationVisitor {
    fn in_range<E: de::Error>(&self, d: Duration) -> Result<Option<Duration>, E> {
        self.range.check(d).map(|()| Some(d)).map_err(|m| {
            E::custom(if self.never_allowed {
                format!("{m}; write \"never\" for no expiry")
            } else {
                m
            })
        })
    }
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
        self.in_range(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("a duration cannot be negative ({v})"))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        if self.never_allowed && v.eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        if let Ok(secs) = v.parse::<u64>() {
            return self.visit_u64(secs);
        }
        match humantime::parse_duration(v) {
            Ok(d) => self.in_range(d),
            Err(humantime::DurationError::NumberOverflow) => Err(E::custom(format!(
                "`{v}` is out of range: {} is between {} and {}",
                self.range.what,
                text(&self.range.min),
                text(&self.range.max)
            ))),
            Err(e) => Err(E::custom(format!(
                "`{v}` is not a duration ({e}); write e.g. 30s, 5m or 1h"
            ))),
        }
    }
}

fn text(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

fn visit<'de, D: Deserializer<'de>>(
    d: D,
    never_allowed: bool,
    range: &'static Range,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor {
        never_allowed,
        range,
    })
}

/// A required timeout or wait ([`WAIT`]).
pub(crate) mod wait {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        visit(d, false, &WAIT)?.ok_or_else(|| de::Error::custom("\"never\" is not allowed here"))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(d))
    }
}

/// An optional timeout or wait ([`WAIT`]), absent when unset.
pub(crate) mod optional_wait {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        wait::deserialize(d).map(Some)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => wait::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// A ttl ([`TTL`]), `None` written as `"never"`.
pub(crate) mod ttl {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        visit(d, true, &TTL)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&text(d)),
            None => s.serialize_str("never"),
        }
    }
}

/// An optional lifetime ([`TTL`]), absent when unset.
pub(crate) mod optional_ttl {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        visit(d, false, &TTL)?
            .ok_or_else(|| de::Error::custom("\"never\" is not allowed here"))
            .map(Some)
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
        ttl::deserialize(d).map(Some)
    }

    pub(crate) fn serialize<S: Serializer>(
        d: &Option<Option<Duration>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_none(),
            Some(inner) => ttl::serialize(inner, s),
        }
    }
}
