//! One syslog message into a record.

use std::net::IpAddr;

use chrono::{Datelike, TimeZone, Utc};
use syslog_loose::{IncompleteDate, Protocol, Variant};

use amoskys_schemas::SyslogRecord;

use super::auth::auth_event;

/// Why a message was rejected: only an empty one is. A line that is not
/// syslog is still kept, whole, with a `parse_error` saying why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
}

impl ParseError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
        }
    }
}

/// `parse_error` of a message behind a valid PRI in no RFC layout.
pub const NO_HEADER: &str = "no_header";
/// `parse_error` of a line with no PRI that no RFC layout fits (auditd records,
/// ISO or bracketed timestamps, application logs sent as they are).
pub const NOT_SYSLOG: &str = "not_syslog";

const NS: i64 = 1_000_000_000;

/// Parses one message received at `received_ns` from `sender`. Bytes that are not
/// UTF-8 are replaced, never rejected. RFC 3164 timestamps carry no year: the year
/// of reception is used, or the one before when that puts the message more than a
/// day in the future (a December message received in January).
pub fn parse_message(
    bytes: &[u8],
    received_ns: i64,
    sender: Option<IpAddr>,
) -> Result<SyslogRecord, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let received = Utc.timestamp_nanos(received_ns);
    let year_of = |d: IncompleteDate| {
        let (month, day, hour, minute, second) = d;
        let y = received.year();
        let t = Utc
            .with_ymd_and_hms(y, month, day, hour, minute, second)
            .single();
        match t {
            Some(t) if t.timestamp() > received.timestamp() + 86_400 => y - 1,
            _ => y,
        }
    };
    // RFC 5424, or RFC 3164 with or without PRI. Failing both, a message that
    // starts with a valid PRI is still syslog in a vendor's own layout (Cisco
    // sequence numbers, key=value firewalls): PRI kept, the rest is the message,
    // the time is the time of reception — as syslog daemons treat them.
    let m = match syslog_loose::parse_message_with_year_exact_tz(
        text,
        year_of,
        Some(Utc),
        Variant::Either,
    ) {
        Ok(m) => m,
        Err(_) => return Ok(unstructured(text, received_ns, sender)),
    };
    let ts_ns = m
        .timestamp
        .and_then(|t| t.timestamp_nanos_opt())
        .filter(|t| *t >= 0 && *t <= received_ns.saturating_add(86_400 * NS))
        .unwrap_or(received_ns);
    let structured_data = (!m.structured_data.is_empty()).then(|| {
        let obj: serde_json::Map<String, serde_json::Value> = m
            .structured_data
            .iter()
            .map(|e| {
                let params: serde_json::Map<String, serde_json::Value> = e
                    .params()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                    .collect();
                (e.id.to_string(), serde_json::Value::Object(params))
            })
            .collect();
        serde_json::Value::Object(obj).to_string()
    });
    let message = m.msg.to_string();
    let auth = find_auth(m.hostname, m.appname, &message, text).map(Box::new);
    Ok(SyslogRecord {
        ts_ns,
        received_ns,
        sender,
        protocol: match m.protocol {
            Protocol::RFC5424(_) => "rfc5424",
            Protocol::RFC3164 => "rfc3164",
        },
        facility: m.facility.map(|f| f.as_str()),
        severity: m.severity.map(|s| s as u8),
        hostname: m.hostname.map(str::to_string),
        appname: m.appname.map(str::to_string),
        procid: m.procid.map(|p| p.to_string()),
        msgid: m.msgid.map(str::to_string),
        structured_data,
        message,
        parse_error: None,
        auth,
    })
}

/// Facility keywords by number (RFC 5424 section 6.2.1), as syslog_loose names them.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clockd", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// `<N>` with N from 0 to 191 at the start: the PRI, and what follows it.
fn split_pri(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = digits.parse().ok().filter(|n| *n <= 191)?;
    Some((n, &rest[end + 1..]))
}

/// How many words into a line a header (date, host, program tag) may reach.
const HEADER_WORDS: usize = 7;

/// The authentication fact of a parsed message. When the header was not what it
/// seemed — a host field like `[sshd]` or `<4.3>` (a syslogd's own layout), or
/// no program at all — the message may begin later, after the real program tag:
/// the line is read again from there. A well-formed header is never second-
/// guessed, so text in a message (a reason a client sent, a URL) is never read
/// as another program's line.
fn find_auth(
    host: Option<&str>,
    app: Option<&str>,
    msg: &str,
    line: &str,
) -> Option<amoskys_schemas::AuthEvent> {
    if let Some(a) = auth_event(app, msg) {
        return Some(a);
    }
    let odd_header = app.is_none_or(|a| !is_program(a))
        || host.is_some_and(|h| {
            h.starts_with(['[', '<']) || !h.bytes().any(|b| b.is_ascii_alphanumeric())
        });
    if !odd_header {
        return None;
    }
    match program_tag(line) {
        (Some(app), _, rest) => auth_event(Some(app), rest),
        _ => None,
    }
}

/// A program name as syslog tags carry them.
fn is_program(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// The program tag of a line no RFC layout fits: the first word among its first
/// few that is shaped `name[pid]:`, `name:` or `[name]` (a name starts with a
/// letter), and the text after it. None further in: the rest of a line may be
/// anyone's words.
fn program_tag(text: &str) -> (Option<&str>, Option<&str>, &str) {
    let mut start = 0;
    let mut words = 0;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        if c != ' ' {
            continue;
        }
        let word = &text[start..i];
        let next = (i + 1).min(text.len());
        start = next;
        if word.is_empty() {
            continue;
        }
        words += 1;
        if words > HEADER_WORDS {
            break;
        }
        let tag = if let Some(w) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some((w, None))
        } else if let Some(w) = word.strip_suffix(':') {
            match w.strip_suffix(']').and_then(|w| w.split_once('[')) {
                Some((name, pid)) if pid.bytes().all(|b| b.is_ascii_digit()) => {
                    Some((name, Some(pid)))
                }
                Some(_) => None,
                None => Some((w, None)),
            }
        } else {
            None
        };
        if let Some((name, pid)) = tag.filter(|(n, _)| is_program(n)) {
            return (Some(name), pid, &text[next..]);
        }
    }
    (None, None, text)
}

/// Neither RFC fits. A message with a valid PRI is syslog in a vendor's own
/// layout (Cisco sequence numbers, key=value firewalls): its PRI is kept. Any
/// other line (auditd, ISO or bracketed dates, a file sent as it is) is kept
/// whole. Either way the message is the text as received, the time is that of
/// reception (as syslog daemons treat them), `parse_error` says why, and the
/// authentication facts are read after the program tag, if one is found.
fn unstructured(text: &str, received_ns: i64, sender: Option<IpAddr>) -> SyslogRecord {
    let (pri, rest, error) = match split_pri(text) {
        Some((pri, rest)) => (Some(pri), rest.trim(), NO_HEADER),
        None => (None, text, NOT_SYSLOG),
    };
    let (app, procid, after) = program_tag(rest);
    SyslogRecord {
        ts_ns: received_ns,
        received_ns,
        sender,
        protocol: "unstructured",
        facility: pri.and_then(|p| FACILITIES.get(usize::from(p / 8)).copied()),
        severity: pri.map(|p| p % 8),
        hostname: None,
        appname: app.map(str::to_string),
        procid: procid.map(str::to_string),
        msgid: None,
        structured_data: None,
        auth: match app {
            Some(_) => auth_event(app, after),
            // No tag: a record that is its own message (auditd's `type=...`).
            None => auth_event(None, rest),
        }
        .map(Box::new),
        message: rest.to_string(),
        parse_error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-01-15 10:00:00 UTC
    const NOW: i64 = 1_705_312_800 * NS;

    #[test]
    fn rfc5424_with_structured_data() {
        let r = parse_message(
            br#"<165>1 2024-01-15T09:59:58.5Z web01 nginx 4242 ACCESS [origin ip="192.0.2.7" x="1"] GET /"#,
            NOW,
            None,
        )
        .expect("parsed");
        assert_eq!(r.protocol, "rfc5424");
        assert_eq!((r.facility, r.severity), (Some("local4"), Some(5)));
        assert_eq!(r.hostname.as_deref(), Some("web01"));
        assert_eq!(r.appname.as_deref(), Some("nginx"));
        assert_eq!(r.procid.as_deref(), Some("4242"));
        assert_eq!(r.msgid.as_deref(), Some("ACCESS"));
        assert_eq!(r.message, "GET /");
        assert_eq!(r.ts_ns, NOW - 1_500_000_000);
        let sd: serde_json::Value =
            serde_json::from_str(r.structured_data.as_deref().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(sd["origin"]["ip"], "192.0.2.7");
    }

    #[test]
    fn rfc3164_with_and_without_pri_and_year_rollover() {
        let r = parse_message(b"<38>Jan 15 09:00:00 gw sshd[77]: Accepted password for bob from 10.0.0.9 port 5555 ssh2", NOW, None)
            .expect("parsed");
        assert_eq!(r.protocol, "rfc3164");
        assert_eq!((r.facility, r.severity), (Some("auth"), Some(6)));
        assert_eq!(r.appname.as_deref(), Some("sshd"));
        assert_eq!(r.ts_ns, NOW - 3600 * NS);
        assert!(r.auth.is_some());
        // No PRI, as in loghub's OpenSSH log; December seen in January is last year.
        let r = parse_message(
            b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
            NOW,
            None,
        )
        .expect("parsed");
        assert_eq!(r.hostname.as_deref(), Some("LabSZ"));
        assert_eq!(Utc.timestamp_nanos(r.ts_ns).year(), 2023);
    }

    #[test]
    fn garbage_is_an_error_or_a_message_never_a_panic() {
        assert_eq!(parse_message(b"", NOW, None).err(), Some(ParseError::Empty));
        assert_eq!(
            parse_message(b"\0\0\0", NOW, None).err(),
            Some(ParseError::Empty)
        );
        for junk in [
            &b"\xff\xfe\x00garbage"[..],
            b"<999>",
            b"<<<>>>",
            b"1 2 3",
            b"\x1b[31m red",
        ] {
            let _ = parse_message(junk, NOW, None);
        }
        let r = parse_message(b"<999>x", NOW, None).expect("kept");
        assert_eq!(
            (r.message.as_str(), r.parse_error, r.ts_ns),
            ("<999>x", Some(NOT_SYSLOG), NOW)
        );
        // A vendor layout behind a valid PRI is kept with its priority.
        let r = parse_message(
            b"<189>72: Mar  3 19:57:17.371: %LINK-5-CHANGED: Interface Gi0/2",
            NOW,
            None,
        )
        .expect("kept");
        assert_eq!(
            (r.facility, r.severity, r.ts_ns, r.parse_error),
            (Some("local7"), Some(5), NOW, Some(NO_HEADER))
        );
    }

    /// Text deep in a line is never read as another program's line: only a
    /// header that was not what it seemed is read again from the real tag.
    #[test]
    fn text_inside_a_message_is_not_another_programs_line() {
        for line in [
            &b"<38>Jan 15 09:00:00 gw sshd[7]: Received disconnect from 203.0.113.5 port 53722:11: x: PAM 40 more authentication failures; rhost=6.6.6.6 [preauth]"[..],
            b"<38>Jan 15 09:00:00 gw sshd[7]: Received disconnect from 203.0.113.5 port 53722:11: sshd[1]: Failed password for root from 6.6.6.6 port 22 ssh2",
            b"203.0.113.5 - - [15/Jan/2024:09:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x sshd: Failed password for root from 6.6.6.6 port 22 ssh2\"",
        ] {
            let r = parse_message(line, NOW, None).expect("kept");
            let remote = r.auth.as_ref().and_then(|a| a.remote);
            assert_ne!(remote, "6.6.6.6".parse().ok(), "{}", String::from_utf8_lossy(line));
        }
        // fail2ban's BSD syslogd layouts: the real tag is found after them.
        for line in [
            &b"Apr  2 17:51:27 <4.3> pancake sshd[55624]: error: PAM: authentication error for nick from example.com"[..],
            b"Dec 31 11:59:59 [sshd] error: PAM: Authentication failure for kevin from 193.168.0.128",
            b"Mar 19 23:48:18 <auth.info> pancake sshd[55517]: Invalid user r00t from 183.60.159.20",
        ] {
            let r = parse_message(line, NOW, None).expect("kept");
            assert!(r.auth.is_some(), "{}", String::from_utf8_lossy(line));
        }
    }

    /// Lines no RFC layout fits are kept whole, timed by their reception, and
    /// their authentication facts are still read.
    #[test]
    fn lines_that_are_not_syslog_are_kept() {
        let lines: [(&[u8], Option<&str>, Option<&str>); 4] = [
            (
                b"type=USER_AUTH msg=audit(1705312790.123:77): pid=4242 uid=0 auid=4294967295 ses=4294967295 msg='op=PAM:authentication grantors=? acct=\"root\" exe=\"/usr/sbin/sshd\" hostname=198.51.100.7 addr=198.51.100.7 terminal=ssh res=failed'",
                Some("pam_failure"),
                Some("198.51.100.7"),
            ),
            (
                b"2024-01-15 09:59:59 bastion sshd[812]: Failed password for root from 198.51.100.8 port 4022 ssh2",
                Some("failure"),
                Some("198.51.100.8"),
            ),
            (
                b"[2024-01-15T09:59:59.123] [sshd] Invalid user admin from 198.51.100.9 port 4023",
                Some("invalid_user"),
                Some("198.51.100.9"),
            ),
            (b"just some application output", None, None),
        ];
        for (line, kind, remote) in lines {
            let r = parse_message(line, NOW, None).expect("kept");
            let text = String::from_utf8_lossy(line);
            assert_eq!(r.ts_ns, NOW, "{text}");
            assert!(r.message.len() + 40 >= text.len(), "{text}: {}", r.message);
            let auth = r.auth.as_ref();
            assert_eq!(auth.map(|a| a.kind.as_str()), kind, "{text}");
            assert_eq!(
                auth.and_then(|a| a.remote)
                    .map(|a| a.to_string())
                    .as_deref(),
                remote,
                "{text}"
            );
        }
    }
}
