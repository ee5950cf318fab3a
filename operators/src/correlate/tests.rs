use super::*;

fn ip(s: &str) -> Addr {
    Addr::from(s.parse::<std::net::IpAddr>().expect("ip"))
}

fn row(defs: &[FeatureDef], e: &str, window: u64, set: &[(&str, f64)]) -> FeatureRow {
    let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
    for (n, v) in set {
        values[defs.iter().position(|d| d.name == *n).expect("feature")] = *v;
    }
    FeatureRow {
        entity: Entity::Ip(ip(e)),
        window,
        values,
    }
}

fn syn(src: &str, dst: &str, dport: u16, ts_s: i64) -> Packet {
    Packet {
        ts_ns: ts_s * 1_000_000_000,
        src: ip(src),
        dst: ip(dst),
        sport: 40_000,
        dport,
        proto: 6,
        tcp_flags: TcpFlags::SYN,
        ..Packet::default()
    }
}

/// Runs the joins over `rows` and `packets` (all at time 0) and returns the alerts.
fn run(rows: Vec<FeatureRow>, packets: Vec<Packet>) -> Vec<Alert> {
    use timely::dataflow::operators::ToStream;
    use timely::dataflow::operators::capture::{Capture, Event};
    let defs = crate::features::defs();
    let rx = timely::example(move |scope| {
        let c = Correlation {
            settings: CorrelationSettings::default(),
            intel: None,
            counters: Arc::default(),
        };
        let app = Vec::<crate::features::EventObs>::new().to_stream(scope);
        let (alerts, _) = c.build(
            &defs,
            rows.to_stream(scope),
            packets.to_stream(scope),
            None,
            app,
        );
        alerts.capture()
    });
    rx.try_iter()
        .filter_map(|e| match e {
            Event::Messages(_, v) => Some(v),
            Event::Progress(_) => None,
        })
        .flatten()
        .collect()
}

#[test]
fn an_incident_joins_logs_packets_and_the_snmp_of_the_hosts_it_reached() {
    let defs = crate::features::defs();
    let w = 1000u64;
    let t = |pane: u64| (pane * 30) as i64 + 5;
    let attack = [
        ("auth_failures_as_remote", 12.0),
        ("auth_conn_attempts_out", 5.0),
    ];
    let rows = vec![
        row(&defs, "203.0.113.5", w, &attack),
        // The host it logged in to, busy; another host, busy but not reached.
        row(
            &defs,
            "10.0.0.22",
            w,
            &[("snmp_hr_processor_load_mean", 97.0)],
        ),
        row(
            &defs,
            "10.0.0.23",
            w,
            &[("snmp_hr_processor_load_mean", 99.0)],
        ),
        // The same address two windows later: the same incident.
        row(&defs, "203.0.113.5", w + 2, &attack),
        // Failures in the logs only, or connections only: no incident.
        row(
            &defs,
            "198.51.100.9",
            w,
            &[("auth_failures_as_remote", 40.0)],
        ),
        row(
            &defs,
            "198.51.100.10",
            w,
            &[("auth_conn_attempts_out", 40.0)],
        ),
        // Below the thresholds.
        row(
            &defs,
            "198.51.100.11",
            w,
            &[
                ("auth_failures_as_remote", 2.0),
                ("auth_conn_attempts_out", 9.0),
            ],
        ),
    ];
    let packets = vec![
        syn("203.0.113.5", "10.0.0.22", 22, t(w)),
        syn("203.0.113.5", "10.0.0.23", 80, t(w)),
        syn("198.51.100.9", "10.0.0.22", 22, t(w)),
    ];
    let alerts = run(rows, packets);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (a.rule.as_str(), a.window, a.severity),
        (INCIDENT, w, Severity::Critical)
    );
    assert_eq!(a.entity.to_string(), "203.0.113.5");
    assert_eq!(a.sources, ["syslog", "pcap", "snmp"]);
    assert_eq!(
        a.evidence,
        [
            ("auth_failures_as_remote".to_string(), 12.0),
            ("auth_conn_attempts_out".to_string(), 5.0),
            ("snmp_hr_processor_load_mean@10.0.0.22".to_string(), 97.0)
        ]
    );
    assert!(
        a.summary.contains("target 10.0.0.22 at 97 % CPU"),
        "{}",
        a.summary
    );
    // Without the busy target, the incident stands on the two sources.
    let alerts = run(
        vec![row(&defs, "203.0.113.5", w, &attack)],
        vec![syn("203.0.113.5", "10.0.0.22", 22, t(w))],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].sources, ["syslog", "pcap"]);
}

#[test]
fn indicator_lines_parse_to_addresses_networks_and_domains() {
    let (ind, bad) = parse_indicators(
        "# feed\n198.51.100.7\n10.1.2.3/8 # a network\n2001:db8::/32\nEvil.Example.COM.\n\
         10.0.0.1/33\nnot an indicator\n192.0.2.1/32\n10.0.0.300\n",
    );
    let keys: Vec<IndicatorKey> = ind.iter().map(|(k, _)| *k).collect();
    let ip = |s: &str| Addr::from(s.parse::<std::net::IpAddr>().expect("ip"));
    assert!(keys.contains(&IndicatorKey::Ip(ip("198.51.100.7"))));
    assert!(keys.contains(&IndicatorKey::Net(ip("10.0.0.0"), 104)));
    assert!(keys.contains(&IndicatorKey::Net(ip("2001:db8::"), 32)));
    assert!(keys.contains(&IndicatorKey::Ip(ip("192.0.2.1"))));
    assert!(
        keys.contains(&IndicatorKey::Domain(amoskys_schemas::domain_key(
            b"evil.example.com"
        )))
    );
    assert_eq!(ind.len(), 5);
    assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [6, 7, 9]);
}

#[test]
fn fingerprint_lines_parse_with_or_without_their_kind() {
    use crate::features::fingerprint_key;
    let ja4 = "t13d1516h2_8daaf6152771_b186095e22b6";
    let (ind, bad) = parse_indicators(&format!(
        "ja3:E7D705A3286E19EA42F587B344EE6865\nja3s:0123456789abcdef0123456789abcdef\n\
         {ja4}\nja4:{ja4}\nUA: Mozilla/4.0 (compatible; MSIE 6.0)\n\
         6734f37431670b3ab4292b8f60f29984\nja3:xyz\nja4:t13d\nua:\n"
    ));
    let keys: Vec<IndicatorKey> = ind.iter().map(|(k, _)| *k).collect();
    for (kind, v) in [
        ("ja3", "e7d705a3286e19ea42f587b344ee6865"),
        ("ja3s", "0123456789abcdef0123456789abcdef"),
        ("ja4", ja4),
        ("ua", "mozilla/4.0 (compatible; msie 6.0)"),
        ("md5", "6734f37431670b3ab4292b8f60f29984"),
    ] {
        assert!(
            keys.contains(&IndicatorKey::Print(fingerprint_key(kind, v))),
            "{kind} {v}"
        );
    }
    // Six lines, the bare JA4 and the prefixed one under one key.
    assert_eq!(ind.len(), 6, "{ind:?}");
    assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [7, 8, 9]);
}

#[test]
fn an_address_is_looked_up_under_the_networks_loaded() {
    let sh = IntelShared::default();
    let (ind, _) = parse_indicators("10.0.0.0/8\n10.1.0.0/16\n");
    sh.set_lengths(&ind);
    let mut keys = Vec::new();
    let a = Addr::from("10.1.2.3".parse::<std::net::IpAddr>().expect("ip"));
    sh.keys_of(a, &mut keys);
    for (k, _) in &ind {
        assert!(keys.contains(k), "{k:?} not in {keys:?}");
    }
    assert_eq!(keys.len(), 3);
}
