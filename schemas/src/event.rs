//! Normalized events: what log, device and message sources produce, and the
//! `events` table they are written to.

use std::net::IpAddr;
use std::sync::Arc;

use arrow_array::builder::{
    StringBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::addr::Addr;
use crate::error::SchemaError;

/// The kind of authentication fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthKind {
    /// A failed login (password or another method), from `remote` if known.
    Failure,
    /// A successful login.
    Success,
    /// A login attempt for a user that does not exist.
    InvalidUser,
    /// sudo refused after wrong passwords.
    SudoFailure,
    /// sudo ran a command.
    Sudo,
}

impl AuthKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthKind::Failure => "failure",
            AuthKind::Success => "success",
            AuthKind::InvalidUser => "invalid_user",
            AuthKind::SudoFailure => "sudo_failure",
            AuthKind::Sudo => "sudo",
        }
    }
}

/// One authentication fact taken from a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthEvent {
    pub kind: AuthKind,
    /// The login method for SSH (`password`, `publickey`, ...) or the PAM service.
    pub method: Option<String>,
    pub user: Option<String>,
    pub remote: Option<IpAddr>,
    /// The remote side when it is logged as a name rather than an address.
    pub remote_host: Option<String>,
    pub port: Option<u16>,
    /// How many attempts the message stands for (`message repeated N times`).
    pub count: u32,
}

/// A parsed syslog message with everything the `events` table keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct SyslogRecord {
    /// Event time: the message's own timestamp, or the time it was received when
    /// it has none (or one more than a day in the future).
    pub ts_ns: i64,
    pub received_ns: i64,
    /// Address of the peer that sent the message.
    pub sender: Option<IpAddr>,
    /// "rfc5424" or "rfc3164".
    pub protocol: &'static str,
    pub facility: Option<&'static str>,
    /// Severity 0 (emergency) to 7 (debug).
    pub severity: Option<u8>,
    pub hostname: Option<String>,
    pub appname: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    /// RFC 5424 structured data as a JSON object of objects, if any.
    pub structured_data: Option<String>,
    pub message: String,
    /// What an authentication message says, if it is one.
    pub auth: Option<AuthEvent>,
}

/// One row of the `events` table: a record and the source that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// The `name` of the source section that produced the record.
    pub source: Arc<str>,
    pub record: SyslogRecord,
}

impl EventRow {
    pub fn ts_ns(&self) -> i64 {
        self.record.ts_ns
    }

    /// The entity the event is about: the host that sent it.
    pub fn entity(&self) -> Option<Addr> {
        self.record.sender.map(Addr::from)
    }
}

/// The `events` table's columns, in order.
pub fn events_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        Field::new("ts", ts(), false),
        Field::new("received_ts", ts(), false),
        text("source_kind", false),
        text("source", false),
        text("entity", true),
        text("protocol", false),
        text("facility", true),
        Field::new("severity", DataType::UInt8, true),
        text("hostname", true),
        text("appname", true),
        text("procid", true),
        text("msgid", true),
        text("structured_data", true),
        text("message", false),
        text("auth_kind", true),
        text("auth_method", true),
        text("auth_user", true),
        text("auth_remote", true),
        Field::new("auth_count", DataType::UInt32, true),
    ]))
}

/// Converts event rows into one Arrow batch with [`events_schema`].
pub fn events_to_batch(rows: &[EventRow]) -> Result<RecordBatch, SchemaError> {
    let n = rows.len();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut severity = UInt8Builder::with_capacity(n);
    let mut count = UInt32Builder::with_capacity(n);
    // Text columns in schema order, from source_kind to auth_remote.
    const TEXT: usize = 16;
    let mut text: Vec<StringBuilder> = (0..TEXT)
        .map(|_| StringBuilder::with_capacity(n, n * 16))
        .collect();
    let mut entity = String::with_capacity(40);
    for row in rows {
        let r = &row.record;
        ts.append_value(r.ts_ns.div_euclid(1000));
        received.append_value(r.received_ns.div_euclid(1000));
        severity.append_option(r.severity);
        let auth = r.auth.as_ref();
        count.append_option(auth.map(|a| a.count));
        entity.clear();
        if let Some(e) = row.entity() {
            e.push_to(&mut entity);
        }
        let remote = auth.and_then(|a| {
            a.remote
                .map(|ip| ip.to_string())
                .or_else(|| a.remote_host.clone())
        });
        let values: [Option<&str>; TEXT] = [
            Some("syslog"),
            Some(&row.source),
            Some(entity.as_str()).filter(|e| !e.is_empty()),
            Some(r.protocol),
            r.facility,
            r.hostname.as_deref(),
            r.appname.as_deref(),
            r.procid.as_deref(),
            r.msgid.as_deref(),
            r.structured_data.as_deref(),
            Some(&r.message),
            auth.map(|a| a.kind.as_str()),
            auth.and_then(|a| a.method.as_deref()),
            auth.and_then(|a| a.user.as_deref()),
            remote.as_deref(),
            None,
        ];
        for (b, v) in text.iter_mut().zip(values) {
            b.append_option(v);
        }
    }
    let mut text: Vec<ArrayRef> = text
        .into_iter()
        .take(TEXT - 1)
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let remote_col = text.pop();
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish()), Arc::new(received.finish())];
    let mut text = text.into_iter();
    // source_kind, source, entity, protocol, facility
    cols.extend(text.by_ref().take(5));
    cols.push(Arc::new(severity.finish()));
    // hostname .. auth_user
    cols.extend(text);
    cols.extend(remote_col);
    cols.push(Arc::new(count.finish()));
    Ok(RecordBatch::try_new(events_schema(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_columns_in_schema_order() {
        let rec = SyslogRecord {
            ts_ns: 1_000_000_000,
            received_ns: 2_000_000_000,
            sender: "10.0.0.5".parse().ok(),
            protocol: "rfc3164",
            facility: Some("auth"),
            severity: Some(4),
            hostname: Some("h".into()),
            appname: Some("sshd".into()),
            procid: Some("7".into()),
            msgid: None,
            structured_data: None,
            message: "Failed password for root from 1.2.3.4 port 22 ssh2".into(),
            auth: Some(AuthEvent {
                kind: AuthKind::Failure,
                method: Some("password".into()),
                user: Some("root".into()),
                remote: "1.2.3.4".parse().ok(),
                remote_host: None,
                port: Some(22),
                count: 1,
            }),
        };
        let b = events_to_batch(&[EventRow {
            source: "edge".into(),
            record: rec,
        }])
        .expect("batch");
        assert_eq!(b.num_columns(), events_schema().fields().len());
        let col = |name: &str| {
            let a = b.column_by_name(name).expect("column");
            arrow_array::cast::AsArray::as_string::<i32>(a.as_ref())
                .value(0)
                .to_string()
        };
        assert_eq!(col("entity"), "10.0.0.5");
        assert_eq!(col("auth_remote"), "1.2.3.4");
        assert_eq!(col("auth_user"), "root");
        assert_eq!(col("source"), "edge");
        assert_eq!(col("appname"), "sshd");
        assert_eq!(b.column_by_name("msgid").expect("msgid").null_count(), 1);
    }
}
