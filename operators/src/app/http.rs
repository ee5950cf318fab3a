//! HTTP/1.x: the first request and the first response of a connection, read
//! with httparse; messages it refuses (bare line ends, a missing version,
//! `http/1.1` in lower case — what scanners and exploits send) are read
//! leniently by hand, as Zeek does, so that they are still seen. URIs are
//! logged with their percent-escapes decoded, as Zeek logs them.

use amoskys_schemas::app::AppInfo;

/// Longest URI kept; longer ones are cut (at a character boundary).
pub const MAX_URI: usize = 2048;
/// Longest other header value kept.
const MAX_VALUE: usize = 512;
/// Headers read at most per message.
const MAX_HEADERS: usize = 96;

/// Methods that open an HTTP/1.x request (RFC 9110 and WebDAV's common ones).
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
];

/// Whether `data` starts like an HTTP/1.x request: a known method and a space.
pub fn looks_like_request(data: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| data.len() > m.len() && data.starts_with(m) && data[m.len()] == b' ')
}

/// Whether `data` starts like an HTTP/1.x response (in any case).
pub fn looks_like_response(data: &[u8]) -> bool {
    data.len() >= 7 && data[..7].eq_ignore_ascii_case(b"HTTP/1.")
}

/// `%XX` escapes decoded (others left as they are), as text.
fn unescape(uri: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(uri.len());
    let mut i = 0;
    while i < uri.len() {
        if uri[i] == b'%'
            && let (Some(h), Some(l)) = (
                uri.get(i + 1).copied().and_then(hex),
                uri.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(uri[i]);
        i += 1;
    }
    text(&out, MAX_URI)
}

/// Characters of an HTTP token (RFC 9110 `tchar`).
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The lines of a message head, without their line ends, up to the empty
/// line; `None` while the first line is not wholly in.
fn head_lines(data: &[u8]) -> Option<Vec<&[u8]>> {
    let first_end = data.iter().position(|&b| b == b'\n')?;
    let mut lines = Vec::new();
    let mut at = 0;
    for line in data.split(|&b| b == b'\n') {
        let end = at + line.len();
        at = end + 1;
        if end > data.len() || (at > data.len() && end != first_end) {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    Some(lines)
}

/// `name: value` of a header line.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

/// The request line and headers read leniently: method, a space, the URI up
/// to the last ` HTTP/` (all of the rest when there is none).
pub fn lenient_request(data: &[u8], app: &mut AppInfo) -> Read {
    let Some(lines) = head_lines(data) else {
        return Read::Partial;
    };
    let Some(first) = lines.first() else {
        return Read::Bad;
    };
    let Some(sp) = first.iter().position(|&b| b == b' ') else {
        return Read::Bad;
    };
    let method = &first[..sp];
    if method.is_empty() || !method.iter().all(|&b| token(b)) {
        return Read::Bad;
    }
    let rest = first[sp..].trim_ascii_start();
    let uri = if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"HTTP/") {
        &rest[..0]
    } else {
        match rest
            .windows(6)
            .rposition(|w| w.eq_ignore_ascii_case(b" HTTP/"))
        {
            Some(i) => rest[..i].trim_ascii_end(),
            None => rest,
        }
    };
    app.http_method = Some(text(method, MAX_VALUE));
    app.http_uri = Some(unescape(uri));
    for (name, value) in lines[1..].iter().filter_map(|l| header(l)) {
        request_header(name, value, app);
    }
    Read::Done
}

fn request_header(name: &[u8], value: &[u8], app: &mut AppInfo) {
    if name.eq_ignore_ascii_case(b"host") {
        app.http_host = Some(text(value, MAX_VALUE));
    } else if name.eq_ignore_ascii_case(b"user-agent") {
        app.http_user_agent = Some(text(value, MAX_VALUE));
    }
}

fn response_header(name: &[u8], value: &[u8], app: &mut AppInfo) {
    if name.eq_ignore_ascii_case(b"content-type") {
        app.http_content_type = Some(text(value, MAX_VALUE));
    } else if name.eq_ignore_ascii_case(b"content-length") {
        app.http_content_length = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse().ok());
    }
}

/// The status line read leniently: `HTTP/x.y` in any case, then the code.
pub fn lenient_response(data: &[u8], app: &mut AppInfo) -> Read {
    let Some(lines) = head_lines(data) else {
        return Read::Partial;
    };
    let Some(first) = lines.first() else {
        return Read::Bad;
    };
    let mut parts = first.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let code = parts
        .nth(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..1000).contains(c));
    let Some(code) = code else {
        return Read::Bad;
    };
    app.http_status = Some(code);
    for (name, value) in lines[1..].iter().filter_map(|l| header(l)) {
        response_header(name, value, app);
    }
    Read::Done
}

fn text(v: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(v);
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What the outcome of reading a message was.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Fields filled in.
    Done,
    /// The headers are not all in yet.
    Partial,
    /// Not HTTP after all.
    Bad,
}

/// Reads the first request of `data` into `app`.
pub fn request(data: &[u8], app: &mut AppInfo) -> Read {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {}
        Ok(httparse::Status::Partial) => return Read::Partial,
        Err(_) => return lenient_request(data, app),
    }
    app.http_method = req.method.map(str::to_string);
    app.http_uri = req.path.map(|p| unescape(p.as_bytes()));
    for h in req.headers.iter().take_while(|h| !h.name.is_empty()) {
        request_header(h.name.as_bytes(), h.value, app);
    }
    Read::Done
}

/// Reads the first response of `data` into `app`.
pub fn response(data: &[u8], app: &mut AppInfo) -> Read {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(data) {
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {}
        Ok(httparse::Status::Partial) => return Read::Partial,
        Err(_) => return lenient_response(data, app),
    }
    app.http_status = resp.code;
    for h in resp.headers.iter().take_while(|h| !h.name.is_empty()) {
        response_header(h.name.as_bytes(), h.value, app);
    }
    Read::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_a_response() {
        let mut a = AppInfo::default();
        let req = b"GET /download.html HTTP/1.1\r\nHost: www.ethereal.com\r\nUser-Agent: Mozilla/5.0\r\n\r\n";
        assert!(looks_like_request(req));
        assert_eq!(request(req, &mut a), Read::Done);
        assert_eq!(a.http_method.as_deref(), Some("GET"));
        assert_eq!(a.http_uri.as_deref(), Some("/download.html"));
        assert_eq!(a.http_host.as_deref(), Some("www.ethereal.com"));
        assert_eq!(a.http_user_agent.as_deref(), Some("Mozilla/5.0"));
        let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\nContent-Length: 18070\r\n\r\n<html>";
        assert!(looks_like_response(resp));
        assert_eq!(response(resp, &mut a), Read::Done);
        assert_eq!(a.http_status, Some(200));
        assert_eq!(a.http_content_length, Some(18070));
        assert_eq!(
            a.http_content_type.as_deref(),
            Some("text/html; charset=ISO-8859-1")
        );
    }

    #[test]
    fn what_httparse_refuses_is_read_leniently() {
        let cases: [(&[u8], &str, &str); 5] = [
            (b"GET / HTTP/1.1\nHost: h\n\n", "GET", "/"),
            (b"OPTIONS HTTP/1.1\nHost: h\n\n", "OPTIONS", ""),
            (b"GET /HTTP/1.1\nHost: h\n\n", "GET", "/HTTP/1.1"),
            (b"CCM_POST / HTTP/1.\r\nHost: h\r\n\r\n", "CCM_POST", "/"),
            (
                b"GET /a%20b%zz HTTP/1.1\r\nHost: h\r\n\r\n",
                "GET",
                "/a b%zz",
            ),
        ];
        for (req, method, uri) in cases {
            let mut a = AppInfo::default();
            assert_eq!(request(req, &mut a), Read::Done, "{req:?}");
            assert_eq!(
                (
                    a.http_method.as_deref(),
                    a.http_uri.as_deref(),
                    a.http_host.as_deref()
                ),
                (Some(method), Some(uri), Some("h")),
                "{req:?}"
            );
        }
        let mut a = AppInfo::default();
        let resp = b"http/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n";
        assert!(looks_like_response(resp));
        assert_eq!(response(resp, &mut a), Read::Done);
        assert_eq!(
            (a.http_status, a.http_content_type.as_deref()),
            (Some(200), Some("text/html"))
        );
    }

    #[test]
    fn partial_and_broken_messages() {
        let mut a = AppInfo::default();
        assert_eq!(request(b"GET /a", &mut a), Read::Partial);
        // The request line is in, the headers not all: more may come, and
        // when none does, the lenient reading takes what is there.
        let part = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Ag";
        assert_eq!(request(part, &mut a), Read::Partial);
        assert_eq!(lenient_request(part, &mut a), Read::Done);
        assert_eq!(
            (a.http_uri.as_deref(), a.http_host.as_deref()),
            (Some("/a"), Some("x"))
        );
        assert_eq!(a.http_user_agent, None);
        assert!(!looks_like_request(b"GETTER"));
        assert_eq!(response(b"HTTP/1.1 abc\r\n\r\n", &mut a), Read::Bad);
        assert_eq!(
            request(b"GET/ HTTP/1.1\n\n", &mut a),
            Read::Bad,
            "no space after the method"
        );
        assert_eq!(
            request(b"\xc3\x83 / HTTP/1.1\n\n", &mut a),
            Read::Bad,
            "not a token"
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "é".repeat(MAX_URI));
        request(long.as_bytes(), &mut a);
        assert!(a.http_uri.as_deref().is_some_and(|u| u.len() <= MAX_URI));
    }
}
