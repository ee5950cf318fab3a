use super::*;

#[test]
fn hosts_ports_and_downloads() {
    assert!(numeric_host("10.0.0.9:7080") && numeric_host("[2001:db8::1]:80"));
    assert!(numeric_host("192.168.1.1") && !numeric_host("example.com:80"));
    assert!(!numeric_host("example.com") && !numeric_host("1.2.3.4.nip.io"));
    assert!(usual_port("http", 8080) && !usual_port("http", 7080));
    let mut i = AppInfo {
        http_uri: Some("/a/payload.EXE?x=1".into()),
        ..Default::default()
    };
    assert!(executable(&i));
    i.http_uri = Some("/index.html".into());
    i.http_content_type = Some("application/x-dosexec".into());
    assert!(executable(&i));
    i.http_content_type = Some("text/html".into());
    assert!(!executable(&i));
}

fn flow(client: &[&[u8]], server: &[&[u8]]) -> AppState {
    let mut a = AppState::default();
    a.syn(true, 99);
    a.syn(false, 499);
    let (mut cs, mut ss) = (100u32, 500u32);
    for k in 0..client.len().max(server.len()) {
        if let Some(c) = client.get(k) {
            a.segment(true, cs, c, 8192);
            cs += c.len() as u32;
        }
        if let Some(s) = server.get(k) {
            a.segment(false, ss, s, 8192);
            ss += s.len() as u32;
        }
    }
    a
}

#[test]
fn protocols_are_recognised_by_content() {
    type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], Option<&'a str>);
    let cases: [Case; 9] = [
        (
            &[b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"],
            &[b"HTTP/1.1 200 OK\r\n\r\n"],
            Some("http"),
        ),
        (
            &[b"SSH-2.0-OpenSSH_9.6\r\n"],
            &[b"SSH-2.0-dropbear\r\n"],
            Some("ssh"),
        ),
        (
            &[b"EHLO me\r\n"],
            &[b"220 mail ESMTP Postfix\r\n"],
            Some("smtp"),
        ),
        (
            &[b"USER anonymous\r\n"],
            &[b"220 (vsFTPd 3.0.3)\r\n"],
            Some("ftp"),
        ),
        (&[b"USER bob\r\n"], &[b"+OK POP3 ready\r\n"], Some("pop3")),
        (
            &[b"a1 LOGIN x y\r\n"],
            &[b"* OK IMAP4rev1\r\n"],
            Some("imap"),
        ),
        (
            &[b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"],
            &[],
            Some("mqtt"),
        ),
        (
            &[],
            &[b"\xff\xfd\x18\xff\xfd\x20", b"\r\nlogin: "],
            Some("telnet"),
        ),
        (&[&[0u8; 600]], &[&[1u8; 600]], None),
    ];
    for (c, s, want) in cases {
        let a = flow(c, s);
        assert_eq!(a.info().and_then(|i| i.protocol), want, "{c:?}");
    }
}

#[test]
fn an_http_exchange_split_and_reordered_is_read_whole() {
    let req = b"POST /up HTTP/1.1\r\nHost: 10.0.0.9:7080\r\nUser-Agent: curl/8.5.0\r\nContent-Length: 3\r\n\r\nabc";
    let mut a = AppState::default();
    a.syn(true, 0);
    a.segment(true, 1 + 20, &req[20..], 8192);
    a.segment(true, 1, &req[..20], 8192);
    a.segment(
        false,
        7,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        8192,
    );
    let i = a.info().expect("info");
    assert_eq!(i.protocol, Some("http"));
    assert_eq!(i.http_method.as_deref(), Some("POST"));
    assert_eq!(i.http_host.as_deref(), Some("10.0.0.9:7080"));
    assert_eq!(i.http_status, Some(404));
    assert_eq!(i.anomalies, 1, "one segment out of order");
    assert!(
        a.finished() && !a.holds_bytes(),
        "both sides read, bytes let go"
    );
}
