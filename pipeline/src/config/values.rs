//! Values that check themselves while the file is read: durations and
//! numbers within a range, so an error names the key, line and column.

use super::*;

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
        amoskys_sources::duration::deserialize(d).map(Secs)
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
