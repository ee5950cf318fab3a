//! Event time, panes and windows.
//!
//! Time is event time in nanoseconds since the Unix epoch. A *pane* is a 30 s slice
//! `[30p s, 30p s + 30 s)`; window `k` covers panes `k` and `k + 1`, that is
//! `[30k s, 30k s + 60 s)`. A record in pane `p` therefore belongs to windows `p - 1`
//! and `p`, and the timely timestamp of a record is its pane index.

pub const NS_PER_SEC: i64 = 1_000_000_000;
/// Length of a window in seconds.
pub const WINDOW_SECONDS: i64 = 60;
/// Distance between two window starts (the pane length) in seconds.
pub const HOP_SECONDS: i64 = 30;
pub const WINDOW_NS: i64 = WINDOW_SECONDS * NS_PER_SEC;
pub const HOP_NS: i64 = HOP_SECONDS * NS_PER_SEC;

/// The pane a timestamp falls in. Timestamps before the epoch are not representable
/// as panes; callers reject them before asking.
#[inline]
pub fn pane_of(ts_ns: i64) -> u64 {
    debug_assert!(ts_ns >= 0);
    (ts_ns.max(0) / HOP_NS) as u64
}

/// Start of pane `p` (and of window `p`) in nanoseconds.
#[inline]
pub fn pane_start_ns(p: u64) -> i64 {
    (p as i64).saturating_mul(HOP_NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_belong_to_the_later_pane() {
        assert_eq!(pane_of(0), 0);
        assert_eq!(pane_of(HOP_NS - 1), 0);
        assert_eq!(pane_of(HOP_NS), 1);
        assert_eq!(pane_start_ns(3), 90 * NS_PER_SEC);
    }
}
