//! One syslog message into a record.

use std::net::IpAddr;

use chrono::{Datelike, TimeZone, Utc};
use syslog_loose::{IncompleteDate, Protocol, Variant};

use amoskys_schemas::SyslogRecord;

use super::auth::auth_event;

/// Why a message was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    /// Neither RFC 5424 nor RFC 3164 (with or without PRI) fits.
    NotSyslog,
}

impl ParseError {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::NotSyslog => "not_syslog",
        }
    }
}

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
        Err(_) => return unstructured(text, received_ns, sender),
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
    let auth = auth_event(m.appname, &message);
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

/// Neither RFC fits: a message with a valid PRI is syslog in a vendor's own layout
/// (Cisco sequence numbers, key=value firewalls). Its PRI is kept, the rest is the
/// message and the time is that of reception — as syslog daemons treat them.
fn unstructured(
    text: &str,
    received_ns: i64,
    sender: Option<IpAddr>,
) -> Result<SyslogRecord, ParseError> {
    let (pri, rest) = split_pri(text).ok_or(ParseError::NotSyslog)?;
    let message = rest.trim().to_string();
    Ok(SyslogRecord {
        ts_ns: received_ns,
        received_ns,
        sender,
        protocol: "unstructured",
        facility: FACILITIES.get(usize::from(pri / 8)).copied(),
        severity: Some(pri % 8),
        hostname: None,
        appname: None,
        procid: None,
        msgid: None,
        structured_data: None,
        auth: auth_event(None, &message),
        message,
    })
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
        assert_eq!(
            parse_message(b"<999>x", NOW, None).err(),
            Some(ParseError::NotSyslog)
        );
        // A vendor layout behind a valid PRI is kept with its priority.
        let r = parse_message(
            b"<189>72: Mar  3 19:57:17.371: %LINK-5-CHANGED: Interface Gi0/2",
            NOW,
            None,
        )
        .expect("kept");
        assert_eq!(
            (r.facility, r.severity, r.ts_ns),
            (Some("local7"), Some(5), NOW)
        );
    }
}
