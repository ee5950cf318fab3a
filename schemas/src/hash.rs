//! The one fixed-key hash of the project, for values that must hash the same on
//! every worker and in every run: routing records to workers, and telling
//! items apart inside a window (DNS names, message templates, user names).
//! Not for hash tables of attacker-chosen keys (those use random keys), and
//! not for anything written out that must survive an upgrade (alert ids use
//! FNV-1a, whose values are fixed by definition).

use std::hash::{BuildHasher, Hash};

/// The fixed keys: arbitrary, never changed within a release.
const KEYS: (u64, u64, u64, u64) = (
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

fn state() -> ahash::RandomState {
    ahash::RandomState::with_seeds(KEYS.0, KEYS.1, KEYS.2, KEYS.3)
}

/// The stable hash of one value.
pub fn stable_hash<T: Hash + ?Sized>(t: &T) -> u64 {
    state().hash_one(t)
}

/// A hasher with the fixed keys, for hashing several values as one.
pub fn stable_hasher() -> ahash::AHasher {
    state().build_hasher()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_value_hashes_alike_and_different_ones_apart() {
        assert_eq!(stable_hash("example.com"), stable_hash("example.com"));
        assert_ne!(stable_hash("example.com"), stable_hash("example.org"));
        let mut h = stable_hasher();
        "example.com".hash(&mut h);
        assert_eq!(std::hash::Hasher::finish(&h), stable_hash("example.com"));
    }
}
