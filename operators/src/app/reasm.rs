//! In-order reassembly of the first bytes of one direction of a TCP
//! connection, bounded: at most `limit` bytes are kept, and at most
//! [`MAX_PENDING`] segments that came ahead of a gap wait for it. What cannot be
//! placed is counted, never kept.

/// Segments held while they wait for the bytes before them.
pub const MAX_PENDING: usize = 16;

/// One direction's prefix.
#[derive(Debug, Default)]
pub struct Prefix {
    /// Sequence number of the first payload byte (the SYN's + 1, else the
    /// first segment's).
    base: Option<u32>,
    /// The bytes from `base` on, in order, at most `limit`.
    pub data: Vec<u8>,
    /// Segments past a gap: offset from `base`, bytes.
    pending: Vec<(u32, Vec<u8>)>,
    /// Segments that came before the bytes ahead of them.
    pub out_of_order: u32,
    /// Retransmitted bytes that differ from those first received.
    pub conflicts: u32,
    /// Segments that could not be placed: past the part read, or with too many
    /// already waiting.
    pub dropped: u32,
}

impl Prefix {
    /// Notes the sequence number of a SYN: the payload starts one after it.
    pub fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
        }
    }

    /// Whether `limit` bytes are in.
    pub fn full(&self, limit: usize) -> bool {
        self.data.len() >= limit
    }

    /// Adds a segment's payload; whether the in-order bytes grew.
    pub fn add(&mut self, seq: u32, payload: &[u8], limit: usize) -> bool {
        if payload.is_empty() || self.full(limit) {
            return false;
        }
        let base = *self.base.get_or_insert(seq);
        // Offsets are taken modulo 2^32 and read as signed: a segment from
        // before `base` (a retransmission of the SYN's era) is negative.
        let off = seq.wrapping_sub(base) as i32;
        if off < 0 {
            let skip = off.unsigned_abs() as usize;
            if skip >= payload.len() {
                return false;
            }
            return self.add(base, &payload[skip..], limit);
        }
        let off = off as u32;
        let have = self.data.len() as u32;
        if off > have {
            if off as usize >= limit {
                self.dropped += 1;
                return false;
            }
            if self.pending.len() >= MAX_PENDING {
                self.dropped += 1;
                return false;
            }
            self.out_of_order += 1;
            let room = limit - off as usize;
            self.pending
                .push((off, payload[..payload.len().min(room)].to_vec()));
            return false;
        }
        let grew = self.place(off, payload, limit);
        // Segments that waited for these bytes.
        loop {
            let have = self.data.len() as u32;
            let Some(i) = self.pending.iter().position(|(o, _)| *o <= have) else {
                break;
            };
            let (o, bytes) = self.pending.swap_remove(i);
            self.place(o, &bytes, limit);
        }
        grew
    }

    /// Writes `payload` at `off` (at most the current end): bytes already held
    /// are compared, new ones appended up to `limit`.
    fn place(&mut self, off: u32, payload: &[u8], limit: usize) -> bool {
        let off = off as usize;
        let overlap = (self.data.len() - off).min(payload.len());
        if self.data[off..off + overlap] != payload[..overlap] {
            self.conflicts += 1;
        }
        let new = &payload[overlap..];
        let room = limit.saturating_sub(self.data.len());
        let take = new.len().min(room);
        self.data.extend_from_slice(&new[..take]);
        take > 0
    }

    /// The problems met, summed.
    pub fn anomalies(&self) -> u32 {
        self.out_of_order + self.conflicts + self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_in_any_order_make_the_same_prefix() {
        let text = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n";
        let mut a = Prefix::default();
        a.syn(999);
        assert!(a.add(1000, &text[..10], 64));
        assert!(a.add(1010, &text[10..], 64));
        let mut b = Prefix::default();
        b.syn(999);
        assert!(!b.add(1020, &text[20..], 64), "ahead of a gap: waits");
        assert!(!b.add(1010, &text[10..20], 64));
        assert!(b.add(1000, &text[..10], 64), "the gap filled");
        assert_eq!(a.data, text);
        assert_eq!(b.data, text);
        assert_eq!((b.out_of_order, b.conflicts, b.dropped), (2, 0, 0));
    }

    #[test]
    fn retransmissions_overlaps_and_the_limit() {
        let mut p = Prefix::default();
        p.syn(u32::MAX); // the payload starts at 0, across the wrap
        assert!(p.add(0, b"abcdef", 8));
        assert!(!p.add(0, b"abc", 8), "a retransmission adds nothing");
        assert!(!p.add(2, b"XY", 8));
        assert_eq!(p.conflicts, 1, "XY differs from cd, which stay");
        assert!(
            p.add(4, b"efgh-and-more", 8),
            "overlap then new bytes, cut at 8"
        );
        assert_eq!(p.data, b"abcdefgh");
        assert!(p.full(8));
        assert!(!p.add(8, b"ignored", 8), "once full, nothing more is read");
        // Before the start: trimmed to what lies after it.
        let mut q = Prefix::default();
        q.syn(99);
        assert!(q.add(95, b"12345678", 64));
        assert_eq!(q.data, b"678", "the payload starts at 100");
    }

    #[test]
    fn what_cannot_wait_is_dropped_and_counted() {
        let mut p = Prefix::default();
        p.syn(0);
        assert!(!p.add(5000, b"far", 64), "past the part read");
        for k in 0..(MAX_PENDING as u32 + 3) {
            p.add(10 + k * 2, b"x", 64);
        }
        assert_eq!(p.dropped, 1 + 3);
        assert_eq!(p.out_of_order, MAX_PENDING as u32);
        assert!(p.data.is_empty());
    }
}
