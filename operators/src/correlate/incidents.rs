//! The cross-source incident: failed logins in the logs joined with login
//! connections on the wire, and the processor load of the hosts they reached.

use super::*;

/// Evidence of an incident, as the join gives it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum Piece {
    /// Failed logins (syslog) and login connections (packets), as f64 bits.
    Attacker(u64, u64),
    /// A target's processor load (SNMP), as f64 bits.
    Target(Entity, u64),
}

pub(super) fn incidents<'s>(
    pieces: VecCollection<'s, u64, (Entity, (u64, Piece))>,
    s: CorrelationSettings,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    // Per entity: its open incident.
    let mut open: Occurrences<Entity> = Occurrences::new(s.gap_panes);
    on_complete(
        pieces,
        "Incidents",
        |(x, _)| x.route_hash(),
        counters,
        move |mut upds, out| {
            upds.sort();
            let mut by: BTreeMap<(u64, Entity), IncidentWindow> = BTreeMap::new();
            for ((x, (w, piece)), _) in upds {
                let e = by.entry((w, x)).or_default();
                match piece {
                    Piece::Attacker(f, c) => e.0 = Some((f64::from_bits(f), f64::from_bits(c))),
                    Piece::Target(t, load) => e.1.push((t, f64::from_bits(load))),
                }
            }
            for ((w, x), (attacker, targets)) in by {
                let Some((failed, conns)) = attacker else {
                    continue;
                };
                if !open.starts(x.clone(), w) {
                    continue;
                }
                let mut evidence = vec![
                    ("auth_failures_as_remote".to_string(), failed),
                    ("auth_conn_attempts_out".to_string(), conns),
                ];
                let mut sources = vec!["syslog".to_string(), "pcap".to_string()];
                let mut summary = format!(
                    "{x}: {failed:.0} failed logins in the logs and {conns:.0} login connections on the wire"
                );
                if !targets.is_empty() {
                    sources.push("snmp".into());
                    for (t, load) in &targets {
                        evidence.push((format!("snmp_hr_processor_load_mean@{t}"), *load));
                        summary.push_str(&format!("; target {t} at {load:.0} % CPU"));
                    }
                }
                out.push(Alert {
                    id: alert_id(INCIDENT, &x, w),
                    rule: INCIDENT.into(),
                    severity: s.severity,
                    entity: x,
                    window: w,
                    sources,
                    evidence,
                    summary,
                });
            }
        },
    )
}
