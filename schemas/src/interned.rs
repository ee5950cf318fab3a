//! `&'static str` fields (a protocol's name, a message form, a reason) through
//! serde. Serialized as text; read back as the same static string: the first
//! time a text is seen it is kept for the life of the process, and every later
//! reading shares it. The set of such texts is the code's own literals, so it
//! is small; a log holding more distinct ones than [`MAX_INTERNED`] is refused
//! rather than allowed to grow the process without bound.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serializer};

/// Distinct texts kept at most.
pub const MAX_INTERNED: usize = 4096;

fn table() -> &'static Mutex<HashSet<&'static str>> {
    static T: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// The static string equal to `s`: one already kept, or `s` kept from now on.
pub fn intern(s: &str) -> Result<&'static str, String> {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = t.get(s) {
        return Ok(k);
    }
    if t.len() >= MAX_INTERNED {
        return Err(format!(
            "more than {MAX_INTERNED} distinct names in serialized records (read {s:?})"
        ));
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    t.insert(k);
    Ok(k)
}

pub fn serialize<S: Serializer>(v: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
    intern(&s).map_err(serde::de::Error::custom)
}

/// The same for `Option<&'static str>`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<&'static str>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .map(|s| intern(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_the_same_static_string() {
        let a = intern(&String::from("rfc5424")).expect("interned");
        let b = intern("rfc5424").expect("interned");
        assert_eq!(a, "rfc5424");
        assert!(std::ptr::eq(a, b));
    }
}
