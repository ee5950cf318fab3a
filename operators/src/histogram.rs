//! A histogram of small integer values (packet sizes, gap buckets) that keeps its
//! first few distinct values inline: most entities in a pane have a handful of
//! distinct values, and a heap map for each would cost more than its contents.

use crate::Map;

/// Distinct values kept inline before the overflow map is used.
const INLINE: usize = 6;

/// Counts of `u32` values.
#[derive(Clone, Debug, Default)]
pub struct Hist {
    len: u8,
    inline: [(u32, u32); INLINE],
    more: Map<u32, u32>,
}

impl Hist {
    #[inline]
    pub fn add(&mut self, v: u32, n: u32) {
        let len = usize::from(self.len);
        for e in &mut self.inline[..len] {
            if e.0 == v {
                e.1 += n;
                return;
            }
        }
        if len < INLINE {
            self.inline[len] = (v, n);
            self.len += 1;
        } else {
            *self.more.entry(v).or_insert(0) += n;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for (v, n) in other.iter() {
            self.add(v, n);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.inline[..usize::from(self.len)]
            .iter()
            .copied()
            .chain(self.more.iter().map(|(v, n)| (*v, *n)))
    }

    /// The `q`-quantile (0 < q ≤ 1) by nearest rank: the smallest value with at
    /// least ⌈q·n⌉ of the n counted at or below it.
    pub fn quantile(&self, q: f64) -> Option<u32> {
        if self.len == 1 && self.more.is_empty() {
            return Some(self.inline[0].0);
        }
        let n: u64 = self.iter().map(|(_, c)| u64::from(c)).sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut small = [(0u32, 0u32); INLINE];
        let mut big = Vec::new();
        let entries: &mut [(u32, u32)] = if self.more.is_empty() {
            let k = usize::from(self.len);
            small[..k].copy_from_slice(&self.inline[..k]);
            &mut small[..k]
        } else {
            big.extend(self.iter());
            &mut big
        };
        entries.sort_unstable_by_key(|e| e.0);
        let mut seen = 0u64;
        for (v, c) in entries.iter() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(*v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank_inline_and_overflowing() {
        let mut h = Hist::default();
        for (v, n) in [(30, 1), (10, 5), (20, 4)] {
            h.add(v, n);
        }
        assert_eq!(h.quantile(0.5), Some(10));
        assert_eq!(h.quantile(0.51), Some(20));
        assert_eq!(h.quantile(0.9), Some(20));
        assert_eq!(h.quantile(0.91), Some(30));
        assert_eq!(Hist::default().quantile(0.5), None);
        // Past the inline entries, in any order, merged.
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in (1..=50).rev() {
            a.add(v, 1);
            b.add(v, 1);
        }
        a.merge(&b);
        a.add(7, 2);
        assert_eq!(a.iter().map(|(_, n)| n).sum::<u32>(), 102);
        assert_eq!(a.quantile(0.5), Some(25));
        assert_eq!(a.quantile(1.0), Some(50));
        assert_eq!(a.quantile(0.01), Some(1));
    }
}
