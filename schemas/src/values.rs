//! Values of configuration files that check themselves while the file is read,
//! so that an error names the key, line and column: durations written as text
//! (`"90s"`, `"2m"`, `"1h 30m"`, `"500ms"`: humantime's syntax; a bare number has
//! no unit, and says so) and numbers within a range. Every crate that owns a
//! section of flows.toml reads its values with these.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as text: `#[serde(deserialize_with = "amoskys_schemas::values::duration")]`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\"")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s).map_err(|e| {
                E::custom(format!(
                    "invalid duration {s:?}: {e} (write a duration such as \"10s\", \"2m\", \"1h\")"
                ))
            })
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{n} has no unit: write a duration such as \"{n}s\" (or \"{n}ms\", \"{n}m\")"
            )))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{n} has no unit: write a duration such as \"10s\" or \"1500ms\""
            )))
        }
    }
    d.deserialize_any(V)
}

/// A duration written as text: `"90s"`, `"2m"`, `"1h 30m"`, `"500ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl Secs {
    pub const fn from_secs(s: u64) -> Self {
        Secs(Duration::from_secs(s))
    }
    pub fn as_nanos_i64(&self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration(d).map(Secs)
    }
}

/// A [`Secs`] that must be greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositiveSecs(pub Secs);

impl<'de> Deserialize<'de> for PositiveSecs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Secs::deserialize(d)?;
        if s.0.is_zero() {
            return Err(serde::de::Error::custom(
                "duration must be greater than zero",
            ));
        }
        Ok(PositiveSecs(s))
    }
}

/// An integer that must lie in `MIN..=MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        match u64::try_from(v) {
            Ok(u) if (MIN..=MAX).contains(&u) => Ok(Bounded(u)),
            _ => Err(serde::de::Error::custom(format!(
                "{v} is out of range: expected {MIN} to {MAX}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct C {
        #[serde(deserialize_with = "super::duration")]
        t: std::time::Duration,
    }

    #[test]
    fn text_is_a_duration_and_a_number_says_how_to_write_one() {
        let c: C = toml::from_str("t = \"1m 30s\"").expect("text");
        assert_eq!(c.t.as_secs(), 90);
        let e = toml::from_str::<C>("t = 10")
            .expect_err("number")
            .to_string();
        assert!(e.contains("write a duration such as \"10s\""), "{e}");
        let e = toml::from_str::<C>("t = \"ten\"")
            .expect_err("word")
            .to_string();
        assert!(e.contains("invalid duration"), "{e}");
    }
}
