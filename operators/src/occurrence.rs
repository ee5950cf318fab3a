//! "Firing in consecutive windows is one alert": the one rule every detector
//! follows. A detection (a rule for an entity, an indicator a host met, a
//! device's value out of range) that fires in windows at most `gap` apart is
//! one occurrence; only its first window raises an alert, whose id names that
//! window.

use std::hash::Hash;

use crate::Map;

/// Whether firing at `at` continues the occurrence last seen at `last` (at
/// most `gap` windows before, or later: windows may come out of order), and
/// notes `at` as seen.
pub fn continues(last: &mut Option<u64>, at: u64, gap: u64) -> bool {
    let go_on = last.is_some_and(|l| at <= l.saturating_add(gap));
    *last = Some(last.map_or(at, |l| l.max(at)));
    go_on
}

/// The open occurrences of many keys.
pub struct Occurrences<K> {
    last: Map<K, u64>,
    gap: u64,
    newest: u64,
    swept: u64,
}

impl<K: Hash + Eq> Occurrences<K> {
    /// Occurrences whose firings may be `gap` windows apart (1: consecutive).
    pub fn new(gap: u64) -> Self {
        Occurrences {
            last: Map::default(),
            gap: gap.max(1),
            newest: 0,
            swept: 0,
        }
    }

    /// Notes `key` firing at window `at`; true when that starts an occurrence
    /// (raise an alert), false when it continues one. Occurrences over by the
    /// newest window seen are forgotten as windows go by, so the state holds
    /// only what fired in the last `gap` windows.
    pub fn starts(&mut self, key: K, at: u64) -> bool {
        if at > self.newest {
            self.newest = at;
        }
        if self.newest > self.swept.saturating_add(self.gap) {
            let (newest, gap) = (self.newest, self.gap);
            self.last.retain(|_, l| l.saturating_add(gap) >= newest);
            self.swept = newest;
        }
        let mut last = self.last.get(&key).copied();
        let go_on = continues(&mut last, at, self.gap);
        if let Some(l) = last {
            self.last.insert(key, l);
        }
        !go_on
    }

    /// Open occurrences held.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_windows_are_one_occurrence_and_a_quiet_one_ends_it() {
        let mut o = Occurrences::new(1);
        let fired: Vec<bool> = [10, 11, 11, 12, 14, 15]
            .iter()
            .map(|&w| o.starts("a", w))
            .collect();
        assert_eq!(fired, [true, false, false, false, true, false]);
        // Another key has occurrences of its own.
        assert!(o.starts("b", 15));
    }

    #[test]
    fn a_wider_gap_joins_firings_further_apart() {
        let mut o = Occurrences::new(4);
        let fired: Vec<bool> = [10, 14, 19, 23].iter().map(|&w| o.starts(1u8, w)).collect();
        assert_eq!(fired, [true, false, true, false]);
    }

    #[test]
    fn a_late_window_continues_the_occurrence_it_belongs_to() {
        let mut last = Some(20);
        assert!(continues(&mut last, 19, 1));
        assert_eq!(
            last,
            Some(20),
            "an older window does not move the occurrence back"
        );
        assert!(!continues(&mut last, 22, 1));
        assert_eq!(last, Some(22));
        let mut never = None;
        assert!(!continues(&mut never, 5, 1));
        assert_eq!(never, Some(5));
    }

    #[test]
    fn state_holds_only_recent_occurrences() {
        let mut o = Occurrences::new(1);
        for k in 0..1000u32 {
            o.starts(k, 10);
        }
        o.starts(0, 13);
        assert_eq!(o.len(), 1, "occurrences over by window 13 are forgotten");
    }
}
