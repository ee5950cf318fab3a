//! Durations in configuration files, written as text: `"90s"`, `"2m"`, `"1h 30m"`,
//! `"500ms"` (humantime's syntax). A bare number has no unit, and says so.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;

/// `#[serde(deserialize_with = "amoskys_sources::duration::deserialize")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct C {
        #[serde(deserialize_with = "super::deserialize")]
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
