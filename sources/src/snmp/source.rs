//! The running source: one task per agent, each polling on its own interval.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amoskys_schemas::{DeviceKind, DeviceRecord, Entity, Record};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::client::{self, Client, Credentials, PollError};
use super::metrics::{self, RateState};
use super::value::{Oid, Readings};
use crate::error::SourceError;

/// What an SNMP source has done; read by metrics and tests.
#[derive(Debug, Default)]
pub struct SnmpCounters {
    /// Polls that completed, one record each.
    pub polls: AtomicU64,
    /// Polls that failed: no response after every retry, a socket error, an
    /// error status, an SNMPv3 authentication failure.
    pub poll_failures: AtomicU64,
    /// SNMP requests that got a response.
    pub requests: AtomicU64,
    /// Varbinds received.
    pub varbinds: AtomicU64,
    /// Samples produced.
    pub samples: AtomicU64,
    /// Values of the wrong ASN.1 type, or unparseable: skipped.
    pub bad_values: AtomicU64,
    /// Agent restarts noticed (sysUpTime went down); rates restart after one.
    pub reboots: AtomicU64,
    /// A gauge: agents whose last poll failed.
    pub agents_down: AtomicU64,
    /// Polls whose table walk hit its request limit with rows left unread (an
    /// agent answering with very few varbinds per response, or huge tables).
    pub truncated_walks: AtomicU64,
}

impl SnmpCounters {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What every agent task of a source shares.
pub(crate) struct Settings {
    pub(crate) source: String,
    /// `snmpv2c` or `snmpv3`.
    pub(crate) protocol: &'static str,
    pub(crate) community: Vec<u8>,
    /// SNMPv3 security parameters; `None` for v2c.
    pub(crate) security: Option<snmp2::v3::Security>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) max_repetitions: u32,
}

/// One resolved agent.
pub(crate) struct Agent {
    pub(crate) addr: SocketAddr,
    pub(crate) entity: Entity,
}

/// An SNMP source whose agents are resolved; [`SnmpSource::run`] polls them.
pub struct SnmpSource {
    pub name: String,
    pub(crate) agents: Vec<Agent>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) counters: Arc<SnmpCounters>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl SnmpSource {
    /// The agents' resolved addresses, in configuration order.
    pub fn agents(&self) -> Vec<SocketAddr> {
        self.agents.iter().map(|a| a.addr).collect()
    }

    pub fn counters(&self) -> Arc<SnmpCounters> {
        self.counters.clone()
    }

    /// Polls every agent until `stop` turns true, then returns (within the
    /// poll or send under way, which it abandons). Each poll of an agent is sent
    /// as `vec![Record::Device(..)]`; a full channel holds that agent's next
    /// poll back, never the other agents'. Returns early, also with `Ok`, if the
    /// receiving side of `tx` goes away.
    pub async fn run(
        self,
        tx: impl Into<crate::wal::RecordTx>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let tx: crate::wal::RecordTx = tx.into();
        let mut tasks = tokio::task::JoinSet::new();
        for agent in self.agents {
            tasks.spawn(poll_agent(
                agent,
                self.settings.clone(),
                self.counters.clone(),
                tx.clone(),
                stop.clone(),
            ));
        }
        drop(tx);
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(source = %self.name, error = %e, "SNMP agent task failed");
            }
        }
        Ok(())
    }
}

/// What one successful poll read.
struct Polled {
    requests: u32,
    varbinds: u32,
    truncated: bool,
}

/// One poll: a GET of the scalars, then a GETBULK walk of every table column.
async fn poll(
    client: &mut Client,
    scalars: &[Oid],
    columns: &[Oid],
    max_rep: u32,
    out: &mut Readings,
) -> Result<Polled, PollError> {
    out.clear();
    let got = client.get(scalars).await?;
    let mut varbinds = u32::try_from(got.len()).unwrap_or(u32::MAX);
    out.extend(got);
    let w = client::walk(client, columns, max_rep, out).await?;
    varbinds = varbinds.saturating_add(w.varbinds);
    Ok(Polled {
        requests: 1 + w.requests,
        varbinds,
        truncated: w.truncated,
    })
}

async fn poll_agent(
    agent: Agent,
    settings: Arc<Settings>,
    counters: Arc<SnmpCounters>,
    tx: crate::wal::RecordTx,
    mut stop: watch::Receiver<bool>,
) {
    let credentials = match &settings.security {
        Some(s) => Credentials::V3(Box::new(s.clone())),
        None => Credentials::Community(settings.community.clone()),
    };
    let mut client = Client::new(agent.addr, credentials, settings.timeout, settings.retries);
    let scalars = metrics::scalar_oids();
    let columns = metrics::table_columns();
    let mut readings = Readings::new();
    let mut state = RateState::default();
    let mut down = false;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let source = settings.source.as_str();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            _ = ticker.tick() => {}
        }
        // The poll's time: before its first request, so every reading is later.
        let ts_ns = now_ns();
        let at = Instant::now();
        let polled = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            r = poll(&mut client, &scalars, &columns, settings.max_repetitions, &mut readings) => r,
        };
        let polled = match polled {
            Ok(p) => p,
            Err(e) => {
                counters.poll_failures.fetch_add(1, Ordering::Relaxed);
                if !down {
                    down = true;
                    counters.agents_down.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        source, agent = %agent.addr, error = %e,
                        "SNMP poll failed; further failures of this agent are not logged until it answers again"
                    );
                } else {
                    tracing::debug!(source, agent = %agent.addr, error = %e, "SNMP poll failed");
                }
                continue;
            }
        };
        if down {
            down = false;
            counters.agents_down.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(source, agent = %agent.addr, "SNMP agent answers again");
        }
        let ex = metrics::extract(&readings, &mut state, at);
        if ex.rebooted {
            counters.reboots.fetch_add(1, Ordering::Relaxed);
            tracing::info!(source, agent = %agent.addr, "SNMP agent restarted (sysUpTime went down): rates start over");
        }
        if let Some(what) = &ex.first_bad {
            tracing::debug!(
                source, agent = %agent.addr, bad_values = ex.bad_values, first = %what,
                "SNMP values of the wrong type skipped"
            );
        }
        counters.polls.fetch_add(1, Ordering::Relaxed);
        if polled.truncated && counters.truncated_walks.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                source, agent = %agent.addr,
                "SNMP table walk stopped at its request limit with rows unread (counted in truncated_walks; logged once)"
            );
        }
        counters
            .requests
            .fetch_add(u64::from(polled.requests), Ordering::Relaxed);
        counters
            .varbinds
            .fetch_add(u64::from(polled.varbinds), Ordering::Relaxed);
        counters
            .samples
            .fetch_add(ex.samples.len() as u64, Ordering::Relaxed);
        counters
            .bad_values
            .fetch_add(ex.bad_values, Ordering::Relaxed);
        let record = DeviceRecord {
            ts_ns,
            received_ns: now_ns(),
            kind: DeviceKind::Snmp,
            protocol: settings.protocol,
            entity: agent.entity.clone(),
            topic: None,
            payload_bytes: Some(polled.varbinds),
            samples: ex.samples,
        };
        // Waiting here is the backpressure: this agent's next poll waits too.
        let sent = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            r = tx.send(vec![Record::Device(record)]) => r,
        };
        if sent.is_err() {
            break;
        }
    }
}

impl crate::Counters for SnmpCounters {
    fn snapshot(&self) -> Vec<crate::Counter> {
        use crate::{Counter, Meaning::*};
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Counter::new("received", g(&self.polls), Received),
            Counter::new("samples", g(&self.samples), Count),
            Counter::new("poll_failures", g(&self.poll_failures), Error),
            Counter::new("bad_values", g(&self.bad_values), Error),
            Counter::new(
                "agents_down",
                g(&self.agents_down),
                Gauge("amoskys_snmp_agents_down"),
            ),
            Counter::new(
                "truncated_walks",
                g(&self.truncated_walks),
                Discarded("truncated_walks"),
            ),
            Counter::new("reboots", g(&self.reboots), Count),
        ]
    }
}

impl crate::Source for SnmpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "snmp"
    }

    fn serves(&self) -> Vec<String> {
        let agents: Vec<String> = self.agents().iter().map(|a| a.to_string()).collect();
        vec![format!("snmp {}", agents.join(", "))]
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Records
    }

    fn counters(&self) -> Arc<dyn crate::Counters> {
        self.counters.clone()
    }

    fn start(
        self: Box<Self>,
        out: crate::Output,
        stop: crate::Stop,
        rt: &tokio::runtime::Handle,
    ) -> Result<crate::Running, SourceError> {
        let tx = out.into_records(&self.name)?;
        Ok(crate::Running::Task(rt.spawn(self.run(tx, stop))))
    }
}
