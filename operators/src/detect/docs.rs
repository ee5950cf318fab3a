//! docs/DETECTIONS.md, generated from every kind of detection: the built-in
//! rules file (condition and learning rules), the rule language, counting rules
//! and the joins across sources.

use super::{Cmp, DETECTIONS, LEARNING};

/// The detections as Markdown: the body of docs/DETECTIONS.md.
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Detections\n");
    let _ = writeln!(
        s,
        "Generated from the detections (`operators/rules/builtin.toml`, `operators/src/detect/`, \
         `operators/src/count_rules.rs`, `operators/src/device_watch.rs`, \
         `operators/src/correlate/`); a test fails when \
         this file is stale (`UPDATE_DOCS=1 cargo test -p amoskys-operators detections_md` \
         rewrites it).\n"
    );
    let _ = writeln!(
        s,
        "The built-in detections are rules in the language of `[[rules]]` below, shipped in \
         `operators/rules/builtin.toml` (read it, copy from it): each is a set of thresholds \
         on one entity's features in one window (docs/FEATURES.md), all of which must hold; a \
         null feature holds none. An occurrence that fires in consecutive windows is one \
         alert, raised in its first window, with an id that hashes the detection, the entity \
         and that window. Alerts go to the `alerts` table with the feature values that fired \
         them as evidence. Every key can be set in flows.toml, and a `[[rules]]` section of \
         the same name replaces the built-in altogether:\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[detections.vertical_scan]\nenabled = true          # false turns it off\n\
         severity = \"high\"       # low, medium, high or critical\n\
         distinct_dst_ports_out = 100   # a threshold, by feature name\n```\n"
    );
    let _ = writeln!(
        s,
        "A rule has one of three kinds, written `kind = ...` and run by the same engine \
         (one alert path, one merging of consecutive windows, one override by name): \
         `condition` (the default: a condition on each entity's features per window), \
         `count` (events matching a filter, counted over a sliding timespan) and `learn` \
         (each MQTT device's normal, learned and then judged). The built-in file holds \
         condition and learning rules.\n"
    );
    let _ = writeln!(
        s,
        "Rules of your own go in `[[rules]]`: a condition over any features of the catalogue \
         — comparisons (`>=`, `>`, `<=`, `<`, `==`, `!=`) with numbers, combined with `and`, \
         `or`, `not` and parentheses (`and` binds tighter). A comparison with a null feature is \
         unknown, and unknown propagates as in SQL; a rule fires only when its condition is \
         true. `validate` refuses a rule that names no feature, has a syntax error, reuses a \
         name or needs a feature from a source not in its `sources`, saying which rule and \
         why.\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"failed_fanout\"\n\
         condition = \"conn_failed_out >= 20 and (failed_conn_ratio_out >= 0.8 or distinct_peers_out > 10)\"\n\
         severity = \"high\"                # default medium\n\
         sources = [\"pcap\"]                # optional: derived from the features\n\
         summary = \"{{entity}} failed {{conn_failed_out}} connections\"   # optional\n```\n"
    );
    let _ = writeln!(
        s,
        "A rule may group its matches instead of alerting per entity: `group_by = \
         \"network/24\"` (the entities of one IPv4 network of that prefix length; IPv6 hosts \
         by /64; named devices belong to none) or `\"all\"`, with `min_entities` (default 1): \
         one alert per group and window once that many of its entities match, named after \
         the group (`10.0.0.0/24`, `all`), with the number of entities and the largest value \
         of each feature among them as evidence (`{{entities}}` in a summary). Consecutive \
         windows are one occurrence, as for single entities.\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"subnet_failing\"\n\
         condition = \"conn_failed_out >= 5\"\ngroup_by = \"network/24\"\nmin_entities = 3\n```\n"
    );
    let _ = writeln!(
        s,
        "## Counting rules over events (`kind = \"count\"`)\n\n\
         Sigma-style aggregations over the `events` table's rows (syslog messages, MQTT and \
         SNMP samples), evaluated as the events arrive: the events whose fields match \
         `filter` (each field one pattern or a list of them; a pattern matches the whole \
         value, case-insensitively, `*` standing for any characters), grouped by the \
         `group_by` fields, counted over a sliding `timespan` of event time — every event \
         (`count = \"event_count\"`) or the distinct values of one field (`count = \
         \"value_count\"`, `value = \"<field>\"`). A group whose count reaches `threshold` \
         raises an alert, at most one per `timespan`; its entity is the group's value when it \
         groups by one field (an address becomes that host), else the fields and values. \
         Fields: {}. `validate` refuses an unknown field, a missing `value` for \
         `value_count`, an empty pattern or a threshold of 0, naming the rule. The older \
         spelling, `[[count_rules]]` sections without `kind`, is read the same way.\n",
        amoskys_schemas::EventField::ALL
            .iter()
            .map(|f| format!("`{}`", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"user_enumeration\"\nkind = \"count\"\n\
         filter = {{ appname = \"sshd\", message = \"Invalid user * from *\" }}\n\
         group_by = [\"auth_remote\"]\ncount = \"value_count\"      # or \"event_count\"\n\
         value = \"auth_user\"\ntimespan = \"10m\"\nthreshold = 5\nseverity = \"high\"\n\
         summary = \"{{group}}: {{count}} users in {{timespan}}\"   # optional\n```\n"
    );
    let _ = writeln!(
        s,
        "## Learning rules (`kind = \"learn\"`)\n\n\
         Each MQTT device's normal, learned from its own messages over its first `learning` \
         of event time and then judged: `learn = \"topics\"` alerts on a topic the device \
         never used; `learn = \"values\"` on a numeric value outside the range learned for \
         it (after at least `min_samples` samples) widened on each side by `margin` times its \
         width. State is per device and bounded (100,000 devices, 1,000 topics and values \
         each; the device heard from longest ago is forgotten first). The two built-ins \
         below are rules of this kind; a rule of your own with one of their names replaces \
         it:\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"slow_drift\"\nkind = \"learn\"\nlearn = \"values\"\n\
         learning = \"1h\"        # default 10m\nmin_samples = 100      # default 20\n\
         margin = 1.0           # default 0.5\nseverity = \"low\"       # default medium\n```\n"
    );
    for d in DETECTIONS.iter() {
        let _ = writeln!(s, "## `{}`\n", d.name);
        let _ = writeln!(
            s,
            "Severity **{}**; sources: {}.\n\n{}\n",
            d.severity,
            d.sources.join(", "),
            d.description
        );
        let _ = writeln!(s, "| key | fires when | default |\n|---|---|---|");
        for c in d.conditions {
            let op = match c.cmp {
                Cmp::AtLeast => "≥",
                Cmp::AtMost => "≤",
            };
            let _ = writeln!(s, "| `{}` | {op} threshold | {} |", c.feature, c.default);
        }
        let _ = writeln!(s, "\nSummary: `{}`\n", d.summary);
    }
    for l in LEARNING.iter() {
        let r = &l.rule;
        let _ = writeln!(s, "## `{}`\n", r.name);
        let _ = writeln!(
            s,
            "Severity **{}**; sources: {}; a learning rule (`kind = \"learn\"`, `learn = \
             \"{}\"`), learned per device from its events.\n\n{}\n",
            r.severity,
            r.sources.join(", "),
            match r.learn {
                crate::device_watch::Learn::Topics => "topics",
                crate::device_watch::Learn::Values => "values",
            },
            l.description
        );
        let _ = writeln!(s, "| key | default |\n|---|---|");
        for (k, v) in r.keys() {
            let _ = writeln!(s, "| `{k}` | {v} |");
        }
        let _ = writeln!(s, "\nSummary: `{}`\n", r.summary());
    }
    s.push_str(&crate::correlate::markdown());
    s
}
