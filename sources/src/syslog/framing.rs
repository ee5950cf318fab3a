//! Splitting a TCP byte stream into syslog messages (RFC 6587).
//!
//! Two framings exist in the wild: octet counting (`LEN SP MSG`, what RFC 5425/6587
//! senders such as rsyslog's `omfwd` with `TCP_Framing="octet-counted"` use) and
//! non-transparent framing (a message per line). A frame that starts with a
//! non-zero digit run followed by a space is octet-counted; anything else runs to
//! the next newline. The choice is made per frame, so a sender may switch.
//! Written here because it is a small state machine tied to our limits, and no
//! maintained crate offers both framings with per-frame detection.

/// How a frame was delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    NonTransparent,
}

/// What the decoder found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>, Framing),
    /// A message longer than the limit, of at least this many bytes: discarded.
    Oversized(usize),
}

#[derive(Debug)]
enum State {
    /// At a frame boundary (or inside a newline-delimited frame).
    Idle,
    /// Skipping the rest of an oversized octet-counted frame.
    SkipBytes(usize),
    /// Skipping to the end of an oversized line.
    SkipLine(usize),
}

/// Incremental decoder for one connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_len: usize,
    state: State,
}

/// Longest length prefix accepted: 10 digits already exceed any sane limit.
const MAX_LEN_DIGITS: usize = 10;

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max_len: max_len.max(1),
            state: State::Idle,
        }
    }

    /// Bytes held waiting for the rest of a frame (bounded by the limit).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds received bytes; complete frames are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        loop {
            match self.state {
                State::SkipBytes(left) => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    if n < left {
                        self.state = State::SkipBytes(left - n);
                        return;
                    }
                    self.state = State::Idle;
                }
                State::SkipLine(seen) => match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        out.push(Frame::Oversized(seen + i));
                        data = &data[i + 1..];
                        self.state = State::Idle;
                    }
                    None => {
                        self.state = State::SkipLine(seen + data.len());
                        return;
                    }
                },
                State::Idle => {
                    if data.is_empty() && self.buf.is_empty() {
                        return;
                    }
                    self.buf.extend_from_slice(data);
                    data = &[];
                    if !self.take_frames(out) {
                        return;
                    }
                }
            }
        }
    }

    /// Takes every complete frame out of `buf`. Returns true when the state moved
    /// to skipping (the caller goes on with the rest of its input).
    fn take_frames(&mut self, out: &mut Vec<Frame>) -> bool {
        let mut start = 0;
        let result = loop {
            let rest = &self.buf[start..];
            // Leading line ends between frames are noise, not empty messages.
            let skip = rest
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            start += skip;
            let rest = &self.buf[start..];
            if rest.is_empty() {
                break false;
            }
            match octet_count(rest) {
                Prefix::Len(len, digits) => {
                    if len > self.max_len {
                        let have = rest.len() - digits - 1;
                        out.push(Frame::Oversized(len));
                        if have >= len {
                            start += digits + 1 + len;
                            continue;
                        }
                        self.state = State::SkipBytes(len - have);
                        start = self.buf.len();
                        break true;
                    }
                    if rest.len() < digits + 1 + len {
                        break false; // wait for the rest
                    }
                    let msg = rest[digits + 1..digits + 1 + len].to_vec();
                    out.push(Frame::Message(msg, Framing::OctetCounting));
                    start += digits + 1 + len;
                }
                Prefix::Incomplete => break false,
                Prefix::None => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) if i <= self.max_len => {
                        let mut line = &rest[..i];
                        if line.last() == Some(&b'\r') {
                            line = &line[..line.len() - 1];
                        }
                        out.push(Frame::Message(line.to_vec(), Framing::NonTransparent));
                        start += i + 1;
                    }
                    Some(i) => {
                        out.push(Frame::Oversized(i));
                        start += i + 1;
                    }
                    None if rest.len() > self.max_len => {
                        self.state = State::SkipLine(rest.len());
                        start = self.buf.len();
                        break true;
                    }
                    None => break false,
                },
            }
        };
        self.buf.drain(..start);
        result
    }

    /// The connection closed: a trailing line without its newline is a message.
    /// Whether bytes of an unfinished message are held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || matches!(self.state, State::SkipLine(_))
    }

    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if let State::SkipLine(seen) = self.state {
            out.push(Frame::Oversized(seen));
        }
        self.state = State::Idle;
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if !rest.is_empty() && octet_count(rest) == Prefix::None {
            out.push(Frame::Message(rest.to_vec(), Framing::NonTransparent));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Prefix {
    /// Length and number of digits; a space follows the digits.
    Len(usize, usize),
    /// Digits so far, but no space yet.
    Incomplete,
    /// Not an octet-counted frame.
    None,
}

fn octet_count(b: &[u8]) -> Prefix {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || b[0] == b'0' || digits > MAX_LEN_DIGITS {
        return Prefix::None;
    }
    match b.get(digits) {
        None => Prefix::Incomplete,
        Some(b' ') => {
            let len = b[..digits]
                .iter()
                .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            Prefix::Len(len, digits)
        }
        Some(_) => Prefix::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut d = FrameDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    fn msg(s: &str, f: Framing) -> Frame {
        Frame::Message(s.as_bytes().to_vec(), f)
    }

    #[test]
    fn both_framings_split_anywhere() {
        let stream = b"11 <13>hello a<14>line one\r\n\n6 <1>xyz<15>tail";
        let want = vec![
            msg("<13>hello a", Framing::OctetCounting),
            msg("<14>line one", Framing::NonTransparent),
            msg("<1>xyz", Framing::OctetCounting),
            msg("<15>tail", Framing::NonTransparent),
        ];
        assert_eq!(decode(&[stream], 100), want);
        // The same bytes fed one at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes, 100), want);
    }

    #[test]
    fn oversized_frames_are_reported_and_skipped() {
        let long = "x".repeat(50);
        let counted = format!("50 {long}5 <1>ok");
        assert_eq!(
            decode(&[counted.as_bytes()], 10),
            vec![Frame::Oversized(50), msg("<1>ok", Framing::OctetCounting)]
        );
        let split: Vec<&[u8]> = counted.as_bytes().chunks(7).collect();
        assert_eq!(
            decode(&split, 10),
            vec![Frame::Oversized(50), msg("<1>ok", Framing::OctetCounting)]
        );
        let line = format!("<1>{long}\n<2>fine\n");
        let split: Vec<&[u8]> = line.as_bytes().chunks(5).collect();
        let got = decode(&split, 10);
        assert!(matches!(got[0], Frame::Oversized(n) if n >= 50), "{got:?}");
        assert_eq!(got[1..], [msg("<2>fine", Framing::NonTransparent)]);
    }

    #[test]
    fn lines_that_start_with_digits_are_not_lengths() {
        let got = decode(&[b"2024-01-15T10:00:00Z host app: hi\n0 zero\n"], 100);
        assert_eq!(
            got,
            vec![
                msg("2024-01-15T10:00:00Z host app: hi", Framing::NonTransparent),
                msg("0 zero", Framing::NonTransparent)
            ]
        );
    }

    #[test]
    fn memory_stays_bounded_on_an_endless_line() {
        let mut d = FrameDecoder::new(64);
        let mut out = Vec::new();
        for _ in 0..1000 {
            d.push(&[b'a'; 100], &mut out);
            assert!(d.buffered() <= 64 + 100);
        }
        d.push(b"\n<1>after\n", &mut out);
        assert!(matches!(out[0], Frame::Oversized(n) if n >= 100_000));
        assert_eq!(out[1], msg("<1>after", Framing::NonTransparent));
    }
}
