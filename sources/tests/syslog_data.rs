//! Syslog parsing and authentication facts on the real logs in ../shared/data,
//! against the ground truth they ship with.

use std::collections::BTreeMap;
use std::net::IpAddr;

use amoskys_sources::syslog::{AuthKind, parse_message};

mod common;
use common::data;

// 2017-01-01 (loghub's OpenSSH log is from December, of a year it does not name).
const RECEIVED: i64 = 1_483_228_800 * 1_000_000_000;

#[test]
fn openssh_failed_passwords_per_address_match_loghub() {
    let log = std::fs::read_to_string(data("syslog/loghub/OpenSSH_2k.log")).expect("log");
    let mut ours: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut parsed = 0;
    for line in log.lines() {
        let r = parse_message(line.as_bytes(), RECEIVED, None).expect("every line is syslog");
        parsed += 1;
        assert_eq!(r.hostname.as_deref(), Some("LabSZ"));
        if let Some(a) = r
            .auth
            .filter(|a| a.kind == AuthKind::Failure && a.method.as_deref() == Some("password"))
        {
            *ours.entry(a.remote.expect("address")).or_default() += u64::from(a.count);
        }
    }
    assert_eq!(parsed, 2000);
    let want = common::loghub_failed_passwords();
    assert!(want.values().sum::<u64>() > 500);
    assert_eq!(ours, want);
}

#[test]
fn pam_failures_name_the_hosts_fail2ban_expects() {
    let log = std::fs::read_to_string(data("syslog/fail2ban/pam-generic.log")).expect("log");
    let mut lines = log.lines();
    let (mut checked, mut ambiguous) = (0, 0);
    while let Some(line) = lines.next() {
        let Some(json) = line.strip_prefix("# failJSON:") else {
            continue;
        };
        let truth: serde_json::Value = serde_json::from_str(json.trim()).expect("annotation");
        let msg = lines.next().expect("a line follows its annotation");
        if truth["match"] != true {
            continue;
        }
        let r = parse_message(msg.as_bytes(), RECEIVED, None).expect("syslog");
        let a = r
            .auth
            .unwrap_or_else(|| panic!("no authentication fact in {msg}"));
        assert_eq!(a.kind, AuthKind::PamFailure, "{msg}");
        let host = truth["host"].as_str().expect("host");
        let got = a
            .remote
            .map(|ip| ip.to_string())
            .or(a.remote_host.clone())
            .unwrap_or_default();
        // fail2ban reads `ruser= rhost=A user=x rhost=B` as from A. Where ruser
        // may be the client's (any service but sshd), it may also be ` rhost=A
        // user=x`, and the line from B: with two readings no one is blamed, and
        // the line is marked as the injection it is.
        if a.injection && got.is_empty() && !msg.contains("pam_unix(sshd") {
            ambiguous += 1;
            continue;
        }
        assert_eq!(got, host, "{msg}");
        if let Some(user) = truth["user"].as_str() {
            assert_eq!(a.user.as_deref(), Some(user), "{msg}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "{checked} annotated failures checked");
    assert_eq!(ambiguous, 1, "one annotated line has two readings");
}

#[test]
fn captured_datagrams_parse_with_their_priorities() {
    let jsonl = std::fs::read_to_string(data(
        "syslog/from-pcap/tcpdump-syslog_udp.udp-payloads.jsonl",
    ))
    .expect("jsonl");
    let mut pris = Vec::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let payload = hex(v["payload_hex"].as_str().expect("hex"));
        let r = parse_message(&payload, RECEIVED, None).expect("syslog");
        pris.push((r.facility.unwrap_or("-"), r.severity.unwrap_or(9)));
        let pri: u8 = v["payload"]
            .as_str()
            .and_then(|p| p[1..].split('>').next())
            .and_then(|s| s.parse().ok())
            .expect("pri");
        assert_eq!(r.severity, Some(pri % 8));
    }
    assert_eq!(pris.len(), 4);
    let jsonl = std::fs::read_to_string(data("syslog/from-pcap/ndpi-syslog.udp-payloads.jsonl"))
        .expect("jsonl");
    let (mut ok, mut total) = (0, 0);
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        total += 1;
        ok += usize::from(
            parse_message(
                &hex(v["payload_hex"].as_str().expect("hex")),
                RECEIVED,
                None,
            )
            .is_ok(),
        );
    }
    assert_eq!((ok, total), (83, 83));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}
