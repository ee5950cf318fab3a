//! SNMP polling: the health of hosts and network devices as
//! [`amoskys_schemas::DeviceRecord`]s.
//!
//! A source (`[[sources.snmp]]`, [`SnmpSourceConfig`]) polls a list of agents
//! over SNMPv2c or SNMPv3 (USM: MD5/SHA/SHA-256 authentication, AES-128/DES
//! privacy) through the `snmp2` crate, for a fixed set of health metrics
//! ([`METRICS`]: uptime, CPU, memory, storage, disk I/O, interfaces, load).
//!
//! Design:
//! - One tokio task per agent, on its own `interval` (missed ticks are delayed,
//!   not bunched). A slow or dead agent only delays itself: its requests time
//!   out after `timeout`, are re-sent `retries` times, and the failed poll is
//!   counted ([`SnmpCounters::poll_failures`]) and logged once, until the agent
//!   answers again (logged too). [`SnmpCounters::agents_down`] says how many are
//!   failing now.
//! - One poll is few requests: one GET for every scalar, then one GETBULK walk
//!   that carries every table column at once (each column continues from its last
//!   OID until it leaves its subtree), so a host with fewer rows than
//!   `max_repetitions` per table costs two or three round trips.
//! - A poll becomes one record: `ts_ns` is the time the poll began, `entity` the
//!   agent (`ip`, or `ip:port` off port 161), `payload_bytes` the number of
//!   varbinds received, and one [`amoskys_schemas::Sample`] per metric and
//!   instance. Gauges are scaled (KB and allocation units to bytes, ticks to
//!   seconds) and have `raw` null. Counters have `raw` = the counter as read and
//!   `value` = its rate per second since the previous poll (measured on the
//!   monotonic clock): null on the first poll, after a reset, and for the poll
//!   that notices an agent restart (sysUpTime went down). A decrease is a
//!   Counter32/Counter64 wrap when the wrapped difference is under half the
//!   range, a reset otherwise. The ss_cpu_* shares come from the raw tick
//!   counters (falling back to the agent's own percent gauges).
//! - Every value is checked for its ASN.1 type: a wrong one skips that sample
//!   and is counted ([`SnmpCounters::bad_values`]); objects an agent does not
//!   have are simply absent.
//! - Sending waits for the pipeline (polls are slowable), racing the stop signal,
//!   so [`SnmpSource::run`] returns as soon as `stop` turns true.

mod client;
mod config;
mod metrics;
mod source;
mod value;

pub use config::{
    AuthProtocol, PrivProtocol, SNMP_PORT, SecurityLevel, SnmpSourceConfig, SnmpVersion,
};
pub use metrics::{METRICS, MetricDef, scalar_oids, table_columns};
pub use source::{SnmpCounters, SnmpSource};
