//! The built-in detections: a table of conjunctions of thresholds on catalogue
//! features, each tunable in flows.toml (`[detections.<name>]`).

use amoskys_schemas::Severity;

/// How a feature is compared with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    AtLeast,
    AtMost,
}

/// One threshold of a detection.
#[derive(Clone, Copy, Debug)]
pub struct Condition {
    pub feature: &'static str,
    pub cmp: Cmp,
    pub default: f64,
}

/// A built-in detection.
#[derive(Debug)]
pub struct DetectionDef {
    pub name: &'static str,
    pub severity: Severity,
    /// The sources whose features it reads.
    pub sources: &'static [&'static str],
    /// What it means, and how to tune it.
    pub description: &'static str,
    pub conditions: &'static [Condition],
    /// One line; `{entity}` and `{feature_name}` are replaced by their values.
    pub summary: &'static str,
}

const fn at_least(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtLeast,
        default,
    }
}

const fn at_most(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtMost,
        default,
    }
}

/// The built-in detections.
pub static DETECTIONS: &[DetectionDef] = &[
    DetectionDef {
        name: "vertical_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing many ports of a few hosts (TCP or UDP), as nmap does. \
            Raise `distinct_dst_ports_out` for hosts that legitimately reach many services of \
            one server (e.g. passive FTP, RPC).",
        conditions: &[
            at_least("distinct_dst_ports_out", 100.0),
            at_most("distinct_peers_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_dst_ports_out} ports on {distinct_peers_out} host(s)",
    },
    DetectionDef {
        name: "horizontal_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing the same few ports on many hosts (TCP or UDP), as a \
            worm or a sweep does. Raise `distinct_peers_out` for resolvers, proxies and NAT \
            gateways.",
        conditions: &[
            at_least("distinct_peers_out", 100.0),
            at_most("distinct_dst_ports_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_peers_out} hosts on {distinct_dst_ports_out} port(s)",
    },
    DetectionDef {
        name: "service_probe",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Connections to a few hosts that are accepted and then torn down by the \
            client with RSTs, again and again: service and version probing (nmap -sV), which \
            opens each service, sends a probe and aborts. Ordinary clients close with FIN. \
            Raise `tcp_rst_out` for applications that abort their connections by design.",
        conditions: &[
            at_least("conn_attempts_out", 5.0),
            at_least("tcp_rst_out", 10.0),
            at_most("distinct_peers_out", 3.0),
            at_least("tcp_synack_per_syn", 0.9),
        ],
        summary: "{entity} opened {conn_attempts_out} connections to {distinct_peers_out} host(s), all accepted, and sent {tcp_rst_out} RSTs",
    },
    DetectionDef {
        name: "syn_flood",
        severity: Severity::Critical,
        sources: &["pcap"],
        description: "Many TCP SYNs received from many sources (spoofed or distributed) in one \
            window. Tune `tcp_syn_in` to a few times the busiest legitimate minute of the \
            target.",
        conditions: &[
            at_least("tcp_syn_in", 1000.0),
            at_least("distinct_peers_in", 50.0),
        ],
        summary: "{entity} received {tcp_syn_in} SYNs from {distinct_peers_in} sources",
    },
    DetectionDef {
        name: "synack_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many SYN-ACKs received while sending no SYN: the entity's address was \
            spoofed in SYNs to reflectors, which answer it.",
        conditions: &[
            at_least("tcp_synack_in", 500.0),
            at_most("tcp_syn_out", 0.0),
        ],
        summary: "{entity} received {tcp_synack_in} SYN-ACKs from {distinct_peers_in} sources without sending a SYN",
    },
    DetectionDef {
        name: "dns_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS responses received while sending no query: reflection or \
            amplification aimed at the entity.",
        conditions: &[
            at_least("dns_responses_in", 200.0),
            at_most("dns_queries_out", 0.0),
        ],
        summary: "{entity} received {dns_responses_in} DNS responses without asking",
    },
    DetectionDef {
        name: "login_bruteforce_network",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many TCP connections to login services (FTP, SSH, Telnet, RDP) from one \
            source in one window. Raise `auth_conn_attempts_out` for jump hosts and \
            monitoring that log in often.",
        conditions: &[at_least("auth_conn_attempts_out", 20.0)],
        summary: "{entity} opened {auth_conn_attempts_out} connections to login services",
    },
    DetectionDef {
        name: "login_bruteforce_logs",
        severity: Severity::High,
        sources: &["syslog"],
        description: "Failed logins from one remote address (or host name), as logged by \
            the hosts it tried: sshd, PAM, dropbear, FTP servers, each attempt counted once \
            however many lines it gave. Lower `auth_failures_as_remote` to catch slow guessing.",
        conditions: &[at_least("auth_failures_as_remote", 10.0)],
        summary: "{entity} failed {auth_failures_as_remote} logins on {auth_distinct_targets_as_remote} host(s) as {auth_distinct_users_as_remote} user(s)",
    },
    DetectionDef {
        name: "log_injection",
        severity: Severity::High,
        sources: &["syslog"],
        description: "Authentication lines whose client-chosen text (a user name, a reason) \
            carries the line's own address structure (` from A port P`, ` rhost=A`): a client \
            trying to have another host blamed in the entity's log, or to hide. No legitimate \
            user name looks like that. The alert is on the host whose log was targeted; a line \
            with two readings blames no remote host at all.",
        conditions: &[at_least("auth_injection_lines", 1.0)],
        summary: "{entity} logged {auth_injection_lines} authentication line(s) with an address in client-chosen text",
    },
    DetectionDef {
        name: "dhcp_flood",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DHCP client messages with one hardware address in one window: a \
            client asks a few times a minute at most, even retrying, while a flood (to \
            exhaust the server's pool or load it) sends dozens a second. The entity is the \
            client hardware address (`chaddr`). A flood that changes the hardware address \
            with every message needs the link-layer source, which packets here are not keyed \
            on.",
        conditions: &[at_least("dhcp_client_messages", 50.0)],
        summary: "{entity} sent {dhcp_client_messages} DHCP messages from {dhcp_client_ips} address(es)",
    },
    DetectionDef {
        name: "dns_tunnel",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS queries with long names: data carried in query names. Lower \
            `dns_qname_len_mean_out` cautiously: CDNs use long names too.",
        conditions: &[
            at_least("dns_queries_out", 50.0),
            at_least("dns_qname_len_mean_out", 50.0),
        ],
        summary: "{entity} sent {dns_queries_out} DNS queries, names {dns_qname_len_mean_out} characters on average",
    },
    DetectionDef {
        name: "dga",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Many distinct names asked and most answered NXDOMAIN: malware trying \
            generated domains to find its controller.",
        conditions: &[
            at_least("dns_distinct_qnames_out", 20.0),
            at_least("dns_nxdomain_ratio_in", 0.5),
        ],
        summary: "{entity} asked {dns_distinct_qnames_out} names, {dns_nxdomain_ratio_in} of answers NXDOMAIN",
    },
    DetectionDef {
        name: "beaconing",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Connection attempts at near-constant intervals: a bot checking in. \
            Raise `syn_interval_cv_out` to catch jittered beacons, at the cost of \
            scheduled jobs.",
        conditions: &[
            at_least("conn_attempts_out", 6.0),
            at_most("syn_interval_cv_out", 0.1),
        ],
        summary: "{entity} made {conn_attempts_out} connection attempts every {syn_interval_mean_out} s (CV {syn_interval_cv_out})",
    },
    DetectionDef {
        name: "exfiltration",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Bytes sent far above the entity's own running baseline (z-score), and \
            many of them.",
        conditions: &[
            at_least("bytes_out_zscore", 6.0),
            at_least("bytes_out", 50e6),
        ],
        summary: "{entity} sent {bytes_out} bytes, {bytes_out_zscore} standard deviations above its baseline",
    },
    DetectionDef {
        name: "device_cpu_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's processor load (hrProcessorLoad, mean over cores and \
            polls) near its limit for a window.",
        conditions: &[at_least("snmp_hr_processor_load_mean", 90.0)],
        summary: "{entity} processor load {snmp_hr_processor_load_mean} %",
    },
    DetectionDef {
        name: "device_memory_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's memory (UCD total minus available, over total) nearly \
            all used.",
        conditions: &[at_least("snmp_mem_used_ratio", 0.95)],
        summary: "{entity} memory {snmp_mem_used_ratio} used",
    },
    DetectionDef {
        name: "device_interface_errors",
        severity: Severity::Low,
        sources: &["snmp"],
        description: "Interface input errors on an SNMP agent (per second, summed over \
            interfaces).",
        conditions: &[at_least("snmp_if_in_errors_max", 1.0)],
        summary: "{entity} interface input errors up to {snmp_if_in_errors_max}/s",
    },
    DetectionDef {
        name: "device_restart",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's sysUpTime went back between two polls: the device (or \
            its agent) restarted.",
        conditions: &[at_least("snmp_agent_restarts", 1.0)],
        summary: "{entity} restarted ({snmp_agent_restarts} time(s) in the window)",
    },
    DetectionDef {
        name: "device_link_down",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "Interfaces of an SNMP agent went from up to down between two polls.",
        conditions: &[at_least("snmp_links_down", 1.0)],
        summary: "{entity}: {snmp_links_down} interface(s) went down",
    },
    DetectionDef {
        name: "mqtt_flood",
        severity: Severity::Medium,
        sources: &["mqtt"],
        description: "A device publishing far more MQTT messages than sensors do.",
        conditions: &[at_least("mqtt_messages_per_s", 100.0)],
        summary: "{entity} published {mqtt_messages_per_s} MQTT messages/s",
    },
];

/// What flows.toml may change of one detection.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionSettings {
    pub enabled: bool,
    pub severity: Severity,
    /// One per condition, in the definition's order.
    pub thresholds: Vec<f64>,
}

impl DetectionSettings {
    pub fn defaults(def: &DetectionDef) -> Self {
        DetectionSettings {
            enabled: true,
            severity: def.severity,
            thresholds: def.conditions.iter().map(|c| c.default).collect(),
        }
    }
}
