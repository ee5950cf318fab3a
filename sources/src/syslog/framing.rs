//! Splitting a TCP byte stream into syslog messages (RFC 6587).
//!
//! Two framings exist in the wild: octet counting (`LEN SP MSG`, what RFC 5425/6587
//! senders such as rsyslog's `omfwd` with `TCP_Framing="octet-counted"` use) and
//! non-transparent framing (a message per line). A frame is octet-counted when
//! it starts with a non-zero digit run, a space and a `<` (the PRI of the message
//! the count announces). Without the PRI (senders of PRI-less logs exist) a count
//! is believed only where the framing says so: on a connection already counting
//! octets, or when the frame holds no newline and another count follows right
//! after it. Anything else runs to the next newline. So a line that happens to
//! start with a number and a space (an epoch timestamp, a message whose first
//! word is a number) is one line, never a length that swallows the lines after
//! it. Once a connection has shown its framing, that framing is preferred: on a
//! newline-framed connection a line is a line even when it looks like `LEN
//! <PRI>...`; on an octet-counted one, a frame that is no count runs to the next
//! newline, so one malformed message costs only itself.
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
    /// The framing this connection has used so far, once seen.
    seen: Option<Framing>,
}

/// Longest length prefix accepted: 10 digits already exceed any sane limit.
const MAX_LEN_DIGITS: usize = 10;

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max_len: max_len.max(1),
            state: State::Idle,
            seen: None,
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
            let prefix = match (self.seen, octet_count(rest)) {
                (Some(Framing::NonTransparent), _) => Prefix::None,
                (seen, Prefix::Len(len, digits, pri)) if !pri => {
                    match self.counted_without_pri(rest, len, digits, seen) {
                        Some(true) => Prefix::Len(len, digits, pri),
                        Some(false) => Prefix::None,
                        None => break false, // wait for the byte that tells
                    }
                }
                (_, p) => p,
            };
            match prefix {
                Prefix::Len(len, digits, _) => {
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
                    self.seen = Some(Framing::OctetCounting);
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
                        // A line that starts with a PRI or a word sets the connection's
                        // framing; one that starts with a number does not, nor does
                        // a stray line in an octet-counted stream.
                        if self.seen.is_none()
                            && line
                                .first()
                                .is_some_and(|b| *b == b'<' || b.is_ascii_alphabetic())
                        {
                            self.seen = Some(Framing::NonTransparent);
                        }
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
        if rest.is_empty() {
            return;
        }
        match octet_count(rest) {
            // A whole frame left waiting for the byte after it: the stream ended.
            Prefix::Len(len, digits, _)
                if self.seen != Some(Framing::NonTransparent) && rest.len() == digits + 1 + len =>
            {
                out.push(Frame::Message(
                    rest[digits + 1..].to_vec(),
                    Framing::OctetCounting,
                ));
            }
            // The start of a frame the stream cut short: nothing to hand over.
            Prefix::Len(_, _, pri)
                if self.seen != Some(Framing::NonTransparent)
                    && (pri || self.seen == Some(Framing::OctetCounting)) => {}
            _ => out.push(Frame::Message(rest.to_vec(), Framing::NonTransparent)),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Prefix {
    /// Length and number of digits; a space follows the digits. True when the
    /// frame starts with `<`, a PRI, as every syslog message should.
    Len(usize, usize, bool),
    /// Digits so far, but no space yet, or no byte after the space yet.
    Incomplete,
    /// Not an octet-counted frame.
    None,
}

impl FrameDecoder {
    /// Whether `LEN SP` before a frame that does not start with a PRI is an octet
    /// count (`None`: not known until more bytes come). On a connection that has
    /// used octet counting it is; on one whose framing is not known yet, it is
    /// when the frame holds no newline and the next frame starts right after it
    /// with another count (digits and a space). A number too large for a
    /// message never is.
    fn counted_without_pri(
        &self,
        rest: &[u8],
        len: usize,
        digits: usize,
        seen: Option<Framing>,
    ) -> Option<bool> {
        if len > self.max_len {
            return Some(false);
        }
        if seen == Some(Framing::OctetCounting) {
            return Some(true);
        }
        let end = digits + 1 + len;
        if rest[..end.min(rest.len())].contains(&b'\n') {
            return Some(false);
        }
        // The next frame must open with a count of its own: digits, a space.
        let next = rest.get(end..)?;
        let d = next.iter().take_while(|b| b.is_ascii_digit()).count();
        match next.get(d) {
            _ if d > MAX_LEN_DIGITS || next.first() == Some(&b'0') => Some(false),
            None => None,
            Some(b' ') => Some(d > 0),
            Some(_) => Some(false),
        }
    }
}

fn octet_count(b: &[u8]) -> Prefix {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || b[0] == b'0' || digits > MAX_LEN_DIGITS {
        return Prefix::None;
    }
    match b.get(digits) {
        None => Prefix::Incomplete,
        Some(b' ') => match b.get(digits + 1) {
            None => Prefix::Incomplete,
            Some(first) => {
                let len = b[..digits]
                    .iter()
                    .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
                Prefix::Len(len, digits, *first == b'<')
            }
        },
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
        let long = format!("<1>{}", "x".repeat(47));
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
    fn a_number_and_a_space_do_not_swallow_the_lines_after_them() {
        // An epoch timestamp without PRI, a message whose first word is a number
        // (here one larger than the limit), then ordinary lines: every one arrives.
        let stream = b"1705312800 host app: epoch first\n<13>ok one\n42 apples\n<13>ok two\n99999999 x\n<13>ok three\n";
        let want = vec![
            msg("1705312800 host app: epoch first", Framing::NonTransparent),
            msg("<13>ok one", Framing::NonTransparent),
            msg("42 apples", Framing::NonTransparent),
            msg("<13>ok two", Framing::NonTransparent),
            msg("99999999 x", Framing::NonTransparent),
            msg("<13>ok three", Framing::NonTransparent),
        ];
        assert_eq!(decode(&[stream], 100), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes, 100), want);
    }

    #[test]
    fn a_connection_keeps_the_framing_it_showed() {
        // Newline-framed: a line that looks like `LEN <PRI>` is still one line.
        let got = decode(&[b"<13>first\n5 <13>abc\n<13>next\n"], 100);
        assert_eq!(
            got,
            vec![
                msg("<13>first", Framing::NonTransparent),
                msg("5 <13>abc", Framing::NonTransparent),
                msg("<13>next", Framing::NonTransparent),
            ]
        );
        // Octet-counted: a malformed frame costs only itself (up to its newline).
        let got = decode(&[b"6 <13>abgarbage here\n6 <13>cd"], 100);
        assert_eq!(
            got,
            vec![
                msg("<13>ab", Framing::OctetCounting),
                msg("garbage here", Framing::NonTransparent),
                msg("<13>cd", Framing::OctetCounting),
            ]
        );
        // A small number that is the start of an address is no count.
        assert_eq!(
            decode(&[b"1 10.0.0.5 login failed\n<13>next\n"], 100),
            vec![
                msg("1 10.0.0.5 login failed", Framing::NonTransparent),
                msg("<13>next", Framing::NonTransparent),
            ]
        );
        // Counts before PRI-less messages (a log without PRIs, octet-counted):
        // believed where another count follows, or the stream ends, right after.
        let stream = b"9 Dec 10 ab12 Dec 10 abcde";
        let want = vec![
            msg("Dec 10 ab", Framing::OctetCounting),
            msg("Dec 10 abcde", Framing::OctetCounting),
        ];
        assert_eq!(decode(&[stream], 100), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes, 100), want);
        // A trailing partial line is a message at close, digits or not.
        assert_eq!(
            decode(&[b"<13>a\n123"], 100),
            vec![
                msg("<13>a", Framing::NonTransparent),
                msg("123", Framing::NonTransparent)
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
