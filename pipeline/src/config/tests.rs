//! The file read as a user writes it: defaults, each section, and every kind
//! of mistake reported with its place and reason.

use super::*;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, Path::new("flows.toml"))
}

#[test]
fn every_source_kind_parses_as_users_write_it() {
    let c = parse(
        r#"
[[sources.syslog]]
name = "edge"
listen = "udp://127.0.0.1:5514"        # also tcp://… ; several listeners allowed

[[sources.mqtt]]
name = "iot"
broker = "mqtt://127.0.0.1:1883"
topics = ["sensors/#"]
device_pattern = "sensors/{device}/{metric}"
qos = 1

[[sources.snmp]]
name = "core"
agents = ["127.0.0.1:1161"]
version = "2c"
community = "public"
interval = "10s"

[[sources.pcap]]
name = "wire"
interface = "lo"
filter = "tcp or udp"

[sinks.parquet]
path = "data"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.mqtt[0].topics, ["sensors/#"]);
    assert_eq!(c.sources.snmp[0].interval, Duration::from_secs(10));
    assert_eq!(c.sources.pcap[0].filter.as_deref(), Some("tcp or udp"));
    let e = parse("[[sources.mqtt]]\nname = \"edge\"\nbroker = \"mqtt://h\"\ntopics = []\n")
        .expect_err("no topics");
    assert!(e.to_string().contains("topics"), "{e}");
    let e = parse("[[sources.syslog]]\nname = \"x\"\nlisten = \"udp://127.0.0.1:1\"\n[[sources.pcap]]\nname = \"x\"\ninterface = \"lo\"\n")
        .expect_err("same name");
    assert!(e.to_string().contains("used twice"), "{e}");
}

#[test]
fn detections_are_tuned_by_name_and_bad_ones_rejected_with_the_reason() {
    let c = parse(
        "[detections.vertical_scan]\nseverity = \"critical\"\ndistinct_dst_ports_out = 50\n\
         [detections.beaconing]\nenabled = false\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (name, s) = &c.detections.conditions[1];
    assert_eq!(name, "vertical_scan");
    assert_eq!(s.severity, amoskys_schemas::Severity::Critical);
    assert_eq!(s.thresholds, [50.0, 4.0]);
    assert!(!c.detections.conditions[0].1.enabled);
    for (text, says) in [
        ("[detections.portscan]\n", "no such detection"),
        (
            "[detections.syn_flood]\nbytes_out = 3\n",
            "not a key of this detection",
        ),
        (
            "[detections.syn_flood]\ntcp_syn_in = \"many\"\n",
            "write a number",
        ),
        (
            "[detections.syn_flood]\nseverity = \"urgent\"\n",
            "low, medium, high or critical",
        ),
        ("[detections.syn_flood]\nenabled = 1\n", "true or false"),
    ] {
        let e = parse(text).expect_err(text);
        let e = e.to_string();
        assert!(e.contains(says) && e.contains("flows.toml:"), "{text}: {e}");
    }
}

#[test]
fn rules_parse_and_a_bad_one_is_rejected_with_its_name_and_reason() {
    let c = parse(
        "[[rules]]\nname = \"failed_fanout\"\ncondition = \"conn_failed_out >= 20 and distinct_peers_out > 10\"\nseverity = \"high\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.condition_rules()[0].severity,
        amoskys_schemas::Severity::High
    );
    // A rule may take a built-in's name: it replaces the built-in.
    parse("[[rules]]\nname = \"syn_flood\"\ncondition = \"tcp_syn_in > 1\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    for (text, says) in [
        (
            "[[rules]]\nname = \"r\"\ncondition = \"nope > 1\"\n",
            "[[rules]] r: \"nope\" is not a feature",
        ),
        (
            "[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 1\"\n[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 2\"\n",
            "used twice",
        ),
        (
            "[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 1\"\nseverity = \"dire\"\n",
            "expected one of `low`",
        ),
        ("[[rules]]\nname = \"r\"\n", "condition"),
        (
            "[detections.syn_flood]\ntcp_syn_in = 9\n[[rules]]\nname = \"syn_flood\"\ncondition = \"tcp_syn_in > 1\"\n",
            "replaces the built-in syn_flood",
        ),
    ] {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn a_webhook_section_parses_and_its_files_are_checked() {
    let c = parse("[sinks.webhook]\nurl = \"http://127.0.0.1:9/h\"\nbatch = 5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let w = c.sinks.webhook.as_ref().expect("webhook");
    let s = w.settings(Path::new("out")).expect("settings");
    assert_eq!(
        (s.batch, s.spool_dir.as_path()),
        (5, Path::new("out/_webhook_spool"))
    );
    assert_eq!(s.non_retryable, [400, 401, 403, 404, 405, 410, 413, 422]);
    c.check_files().expect("no files to read");
    for (extra, says) in [
        ("url = \"ftp://x\"\n", "http://"),
        (
            "url = \"http://x\"\nsigning_key = \"/nonexistent/key\"\n",
            "signing_key",
        ),
        (
            "url = \"http://x\"\nclient_cert = \"c.pem\"\n",
            "go together",
        ),
    ] {
        let c = parse(&format!("[sinks.webhook]\n{extra}")).unwrap_or_else(|e| panic!("{e}"));
        let e = c.check_files().expect_err(extra);
        assert!(e.contains(says), "{extra}: {e}");
    }
    assert!(parse("[sinks.webhook]\nurl = \"http://x\"\nretries = 3\n").is_err());
}

#[test]
fn correlation_and_threat_intel_parse_and_bad_values_are_refused() {
    let c = parse("[correlation]\nlogin_failures = 5\nincident_gap = \"1h\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let s = &c.correlation;
    assert_eq!(
        (s.login_failures, s.login_connections, s.gap_panes),
        (5.0, 3.0, 120)
    );
    assert!(c.threat_intel.is_none());
    for (bad, says) in [
        ("[correlation]\nlogin_failures = 0\n", "above 0"),
        ("[correlation]\nincident_gap = \"10s\"\n", "at least 30s"),
        ("[correlation]\nthreshold = 3\n", "unknown field"),
        (
            "[threat_intel]\nseverity = \"high\"\n",
            "missing field `file`",
        ),
    ] {
        let e = parse(bad).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let dir = std::env::temp_dir().join(format!("amoskys-intel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("ind.txt");
    std::fs::write(&f, "10.0.0.0/8\nevil.example\n").expect("write");
    let c = parse(&format!(
        "[threat_intel]\nfile = {:?}\n",
        f.display().to_string()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    c.check_files().expect("a good file");
    std::fs::write(&f, "10.0.0.0/8\n10.0.0.300\n").expect("write");
    let e = c.check_files().expect_err("a bad line");
    assert!(e.contains("ind.txt:2") && e.contains("10.0.0.300"), "{e}");
    std::fs::remove_file(&f).expect("rm");
    assert!(c.check_files().expect_err("gone").contains("cannot read"));
}

#[test]
fn count_rules_parse_and_a_bad_one_is_rejected_with_its_name_and_reason() {
    let c = parse(
        "[[count_rules]]\nname = \"spray\"\nfilter = { appname = \"sshd\", auth_kind = [\"failure\", \"invalid_user\"] }\n\
         group_by = [\"auth_remote\"]\ncount = \"value_count\"\nvalue = \"auth_user\"\n\
         timespan = \"10m\"\nthreshold = 5\nseverity = \"high\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = &c.count_rules[0];
    assert_eq!(c.counting_rules(), std::slice::from_ref(s));
    assert_eq!(s.filter.len(), 2);
    assert_eq!(s.filter[1].1, ["failure", "invalid_user"]);
    assert_eq!(s.timespan_ns, 600_000_000_000);
    for (bad, says) in [
        (
            "count = \"value_count\"\n",
            "[[count_rules]] r: count = \"value_count\" needs value",
        ),
        (
            "group_by = [\"user\"]\n",
            "[[count_rules]] r: \"user\" is not an event field",
        ),
        ("filter = { message = \"\" }\n", "empty pattern"),
    ] {
        let e = parse(&format!(
            "[[count_rules]]\nname = \"r\"\ntimespan = \"1m\"\nthreshold = 3\n{bad}"
        ))
        .expect_err(bad)
        .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let e = parse("[[count_rules]]\nname = \"r\"\nthreshold = 3\n")
        .expect_err("timespan")
        .to_string();
    assert!(e.contains("timespan"), "{e}");
}

#[test]
fn counting_and_learning_are_kinds_of_rule() {
    let c = parse(
        "[[rules]]\nname = \"spray\"\nkind = \"count\"\nfilter = { appname = \"sshd\" }\n\
         timespan = \"5m\"\nthreshold = 10\n\
         [[rules]]\nname = \"mqtt_new_topic\"\nkind = \"learn\"\nlearn = \"topics\"\nlearning = \"1h\"\n\
         [[rules]]\nname = \"slow_values\"\nkind = \"learn\"\nlearn = \"values\"\nmargin = 2\n\
         [[count_rules]]\nname = \"older\"\ntimespan = \"1m\"\nthreshold = 3\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<_> = c.rules.iter().map(RuleSpec::kind).collect();
    assert_eq!(kinds, [RuleKind::Count, RuleKind::Learn, RuleKind::Learn]);
    let counting: Vec<String> = c.counting_rules().into_iter().map(|r| r.name).collect();
    assert_eq!(counting, ["spray", "older"]);
    assert_eq!(c.counting_rules()[0].timespan_ns, 300_000_000_000);
    // The user's mqtt_new_topic replaces the built-in; the built-in
    // mqtt_value_out_of_range stays; slow_values is added.
    let learning: Vec<(String, u64, f64)> = c
        .learning_rules()
        .into_iter()
        .map(|r| (r.name, r.learning.as_secs(), r.margin))
        .collect();
    assert_eq!(
        learning,
        [
            ("mqtt_value_out_of_range".into(), 600, 0.5),
            ("mqtt_new_topic".into(), 3600, 0.5),
            ("slow_values".into(), 600, 2.0),
        ]
    );
    for (text, says) in [
        (
            "[[rules]]\nname = \"x\"\nkind = \"sigma\"\n",
            "x: kind = \"sigma\": use \"condition\"",
        ),
        (
            "[[rules]]\nname = \"x\"\nkind = \"learn\"\nlearn = \"colours\"\n",
            "unknown variant `colours`",
        ),
        (
            "[[rules]]\nname = \"x\"\nkind = \"count\"\ncondition = \"bytes_out > 1\"\n",
            "unknown field `condition`",
        ),
        (
            "[[rules]]\nname = \"syn_flood\"\nkind = \"learn\"\nlearn = \"topics\"\n",
            "syn_flood is the name of a built-in condition rule",
        ),
        (
            "[[rules]]\nname = \"x\"\nkind = \"count\"\ntimespan = \"1m\"\nthreshold = 1\n\
             [[count_rules]]\nname = \"x\"\ntimespan = \"1m\"\nthreshold = 1\n",
            "used twice",
        ),
        (
            "[[rules]]\nname = \"x\"\nkind = \"learn\"\nlearn = \"values\"\nmargin = -1\n",
            "margin = -1",
        ),
    ] {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn learning_rules_are_tuned_by_their_keys() {
    let c = parse(
        "[detections.mqtt_value_out_of_range]\nlearning_minutes = 0.5\nmin_samples = 3\nmargin = 0\n\
         [detections.mqtt_new_topic]\nenabled = false\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rules = c.learning_rules();
    let topics = rules
        .iter()
        .find(|r| r.name == "mqtt_new_topic")
        .expect("topics");
    assert!(!topics.enabled);
    let values = rules
        .iter()
        .find(|r| r.name == "mqtt_value_out_of_range")
        .expect("values");
    assert_eq!(
        (values.learning.as_secs(), values.min_samples, values.margin),
        (30, 3, 0.0)
    );
    let e = parse("[detections.mqtt_new_topic]\nmargin = 1\n")
        .expect_err("topics have no margin")
        .to_string();
    assert!(e.contains("margin: not a key"), "{e}");
}

#[test]
fn a_pcap_source_is_an_interface_or_files() {
    let head = "[[sources.pcap]]\nname = \"p\"\n";
    let c = parse(&format!("{head}file = \"x/*.pcap\"\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.pcap[0].file.as_deref(), Some("x/*.pcap"));
    for (bad, says) in [
        ("", "either interface"),
        (
            "interface = \"lo\"\nfile = \"a.pcap\"\n",
            "either interface",
        ),
        ("file = \"a.pcap\"\nfilter = \"tcp\"\n", "not to files"),
    ] {
        let e = parse(&format!("{head}{bad}")).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_built_in_default_parses() {
    let c = parse(include_str!("../../../examples/default.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.syslog.len(), 1);
}

#[test]
fn the_example_file_parses_and_matches_the_defaults() {
    let text = include_str!("../../../examples/flows.toml");
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let d = Config::default();
    assert_eq!(c.flows.idle_timeout, d.flows.idle_timeout);
    assert_eq!(c.flows.active_timeout, d.flows.active_timeout);
    assert_eq!(c.flows.max_flows, d.flows.max_flows);
    assert_eq!(c.window.max_entities, d.window.max_entities);
    assert_eq!(c.window.lateness, d.window.lateness);
    assert_eq!(c.window.idle_timeout, d.window.idle_timeout);
    assert_eq!(c.sources.syslog.len(), 1);
    assert_eq!(c.sources.syslog[0].listen.len(), 2);
    assert_eq!(c.runtime.workers, d.runtime.workers);
    assert_eq!(c.sinks.parquet.zstd_level, d.sinks.parquet.zstd_level);
    assert_eq!(c.sinks.parquet.path, d.sinks.parquet.path);
    assert_eq!(c.wal.enabled, d.wal.enabled);
    assert_eq!(c.wal.fsync, d.wal.fsync);
    assert_eq!(c.wal.segment_bytes, d.wal.segment_bytes);
    assert_eq!(c.wal.max_bytes, d.wal.max_bytes);
}

#[test]
fn an_empty_file_is_all_defaults() {
    let c = parse("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.flows.idle_timeout.0, Secs::from_secs(120));
}

#[test]
fn errors_name_the_line_and_the_reason() {
    let e = parse("[flows]\nidle_timeout = \"0s\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("flows.toml:2:"), "{e}");
    assert!(e.contains("greater than zero"), "{e}");
    let e = parse("[flows]\n\nidel_timeout = \"5s\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("flows.toml:3:"), "{e}");
    assert!(e.contains("unknown field `idel_timeout`"), "{e}");
    let e = parse("[runtime]\nworkers = 0\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("flows.toml:2:") && e.contains("out of range"),
        "{e}"
    );
    let e = parse("[window]\nlateness = \"soon\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("invalid duration"), "{e}");
    let e = parse("[flows]\nidle_timeout = \"2h\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("active_timeout"), "{e}");
    let e = parse("[[sources.syslog]]\nname = \"a\"\nlisten = \"udp://127.0.0.1:1\"\n[[sources.syslog]]\nname = \"a\"\nlisten = \"tcp://127.0.0.1:1\"\n")
        .err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("used twice"), "{e}");
    let e = parse("[[sources.syslog]]\nname = \"a\"\nlisten = \"http://127.0.0.1:1\"\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("flows.toml:3:") && e.contains("unknown scheme"),
        "{e}"
    );
    let e = parse("[sinks.parquet]\nzstd_level = 30\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains(":2:") && e.contains("1 to 22"), "{e}");
}
