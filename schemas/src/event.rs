//! Normalized events: what log, device and message sources produce, and the
//! `events` table they are written to.
//!
//! (Over 600 lines with its tests; the record types and the `events` table's
//! columns are about 550 and change together.)

use std::net::IpAddr;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt8Builder,
    UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::addr::Addr;
use crate::error::SchemaError;
use crate::feature::Entity;

/// A name from the code's own catalogues (a protocol, a message form, a
/// reason), read back from a log as the same static string
/// ([`crate::interned`]).
pub type Name = &'static str;

/// The kind of authentication fact; `kind as u8` is its index in [`AuthKind::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum AuthKind {
    /// A failed login logged by the service itself (sshd's `Failed <method>`,
    /// dropbear, vsftpd, proftpd, su), from `remote` if known.
    Failure,
    /// A failure reported by PAM: pam_unix's `authentication failure` (and its
    /// `N more authentication failures`), or sshd relaying PAM's verdict
    /// (`error: PAM: Authentication failure for`). Usually a second line for an
    /// attempt the service logs too.
    PamFailure,
    /// A successful login.
    Success,
    /// A login attempt for a user that does not exist.
    InvalidUser,
    /// A user refused by the server's policy (`User U from A not allowed because`).
    NotAllowed,
    /// A root login refused (`ROOT LOGIN REFUSED FROM`).
    RootRefused,
    /// A connection cut for too many attempts (`maximum authentication attempts
    /// exceeded`, `Too many authentication failures`, proftpd's `Maximum login
    /// attempts`, dropbear's `Max auth tries reached`).
    MaxAttempts,
    /// A client that left before authenticating (`Connection closed by
    /// authenticating user`, `Disconnected from invalid user` ... `[preauth]`).
    PreauthClosed,
    /// A connection that never said it was SSH (`Did not receive identification
    /// string`, a banner in the wrong format): port scanners and probes.
    NoIdent,
    /// A client whose algorithms the server refused (`Unable to negotiate with`):
    /// old scanners and bots.
    NegotiationFailed,
    /// sudo refused after wrong passwords.
    SudoFailure,
    /// sudo refused a user or command by policy (`user NOT in sudoers`,
    /// `command not allowed`).
    SudoRefused,
    /// sudo ran a command.
    Sudo,
}

impl AuthKind {
    /// Every kind, in code order.
    pub const ALL: [AuthKind; 13] = [
        AuthKind::Failure,
        AuthKind::PamFailure,
        AuthKind::Success,
        AuthKind::InvalidUser,
        AuthKind::NotAllowed,
        AuthKind::RootRefused,
        AuthKind::MaxAttempts,
        AuthKind::PreauthClosed,
        AuthKind::NoIdent,
        AuthKind::NegotiationFailed,
        AuthKind::SudoFailure,
        AuthKind::SudoRefused,
        AuthKind::Sudo,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AuthKind::Failure => "failure",
            AuthKind::PamFailure => "pam_failure",
            AuthKind::Success => "success",
            AuthKind::InvalidUser => "invalid_user",
            AuthKind::NotAllowed => "not_allowed",
            AuthKind::RootRefused => "root_refused",
            AuthKind::MaxAttempts => "max_attempts",
            AuthKind::PreauthClosed => "preauth_closed",
            AuthKind::NoIdent => "no_ident",
            AuthKind::NegotiationFailed => "negotiation_failed",
            AuthKind::SudoFailure => "sudo_failure",
            AuthKind::SudoRefused => "sudo_refused",
            AuthKind::Sudo => "sudo",
        }
    }
}

/// One authentication fact taken from a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEvent {
    pub kind: AuthKind,
    /// The message form recognised (`sshd_failed`, `pam_unix_failure`, ...): the
    /// catalogue in `sources::syslog::auth` names them all.
    #[serde(with = "crate::interned")]
    pub form: Name,
    /// The service that handled the login: `sshd`, `dropbear`, `vsftpd`,
    /// `proftpd`, `su`, `sudo`, or the PAM service named in the line.
    pub service: Option<String>,
    /// The login method for SSH (`password`, `publickey`, ...) or the PAM service.
    pub method: Option<String>,
    pub user: Option<String>,
    pub remote: Option<IpAddr>,
    /// The remote side when it is logged as a name rather than an address.
    pub remote_host: Option<String>,
    pub port: Option<u16>,
    /// How many attempts the message stands for (`message repeated N times`).
    pub count: u32,
    /// The client-chosen text of the line (a user name, a reason) embeds the
    /// address structure of the line (` from A port P`, ` rhost=A`): an attempt
    /// to put another host in the log. When that leaves the line with more than
    /// one reading, `remote` and `remote_host` are empty: no one is blamed on a
    /// guess.
    pub injection: bool,
}

impl AuthEvent {
    /// A fact of `kind` in message form `form`, every other field empty.
    pub fn new(kind: AuthKind, form: &'static str) -> Self {
        AuthEvent {
            kind,
            form,
            service: None,
            method: None,
            user: None,
            remote: None,
            remote_host: None,
            port: None,
            count: 1,
            injection: false,
        }
    }
}

/// A parsed syslog message with everything the `events` table keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyslogRecord {
    /// Event time: the message's own timestamp, or the time it was received when
    /// it has none (or one more than a day in the future).
    pub ts_ns: i64,
    pub received_ns: i64,
    /// Address of the peer that sent the message.
    pub sender: Option<IpAddr>,
    /// "rfc5424" or "rfc3164".
    #[serde(with = "crate::interned")]
    pub protocol: Name,
    #[serde(with = "crate::interned::option")]
    pub facility: Option<Name>,
    /// Severity 0 (emergency) to 7 (debug).
    pub severity: Option<u8>,
    pub hostname: Option<String>,
    pub appname: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    /// RFC 5424 structured data as a JSON object of objects, if any.
    pub structured_data: Option<String>,
    pub message: String,
    /// Why the line is not syslog as RFC 3164 or 5424 describe it, when it is
    /// not: it is kept whole in `message`, timed by its reception.
    #[serde(with = "crate::interned::option")]
    pub parse_error: Option<Name>,
    /// What an authentication message says, if it is one (boxed: most messages
    /// are not).
    pub auth: Option<Box<AuthEvent>>,
}

/// The kind of source a device record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceKind {
    Snmp,
    Mqtt,
}

impl DeviceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceKind::Snmp => "snmp",
            DeviceKind::Mqtt => "mqtt",
        }
    }
}

/// One value a device reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric's name: one of the SNMP catalogue's (`if_in_octets`, ...) or,
    /// for MQTT, the one the topic pattern and the payload give.
    pub metric: String,
    /// Which instance of a per-row metric: interface, core, storage, disk.
    pub instance: Option<String>,
    /// The value: a gauge as read, a counter as a rate per second (null for a
    /// counter's first reading, and after a wrap or reboot that makes the rate
    /// unknowable).
    pub value: Option<f64>,
    /// The reading itself, when `value` is derived from it (counters).
    pub raw: Option<f64>,
    /// The OID read (SNMP).
    pub oid: Option<String>,
}

/// What a device said at one moment: one SNMP poll of one agent, or one MQTT
/// message. Written as one `events` row per sample (one row if it has none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub ts_ns: i64,
    pub received_ns: i64,
    pub kind: DeviceKind,
    /// `snmpv2c`, `snmpv3`, `mqtt3.1.1`, `mqtt5`.
    #[serde(with = "crate::interned")]
    pub protocol: Name,
    /// The device: an SNMP agent's address (or `address:port` off port 161), the
    /// device an MQTT topic names (or the topic itself).
    pub entity: Entity,
    /// The MQTT topic.
    pub topic: Option<String>,
    /// Payload size (MQTT) or response size in varbinds (SNMP).
    pub payload_bytes: Option<u32>,
    pub samples: Vec<Sample>,
}

/// What a source produced. Serializable, for the sources' write-ahead log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Syslog(SyslogRecord),
    Device(DeviceRecord),
}

impl Record {
    pub fn ts_ns(&self) -> i64 {
        match self {
            Record::Syslog(r) => r.ts_ns,
            Record::Device(r) => r.ts_ns,
        }
    }

    /// Times the record by its reception instead of its own timestamp.
    pub fn use_received_time(&mut self) {
        match self {
            Record::Syslog(r) => r.ts_ns = r.received_ns,
            Record::Device(r) => r.ts_ns = r.received_ns,
        }
    }
}

impl From<SyslogRecord> for Record {
    fn from(r: SyslogRecord) -> Self {
        Record::Syslog(r)
    }
}

impl From<DeviceRecord> for Record {
    fn from(r: DeviceRecord) -> Self {
        Record::Device(r)
    }
}

/// One record and the source that produced it: one or more rows of the `events`
/// table.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// The `name` of the source section that produced the record.
    pub source: Arc<str>,
    pub record: Record,
    /// Where the record is in its source's write-ahead log, when the source
    /// keeps one: what the `events` table's commits record.
    pub log_offset: Option<u64>,
}

impl EventRow {
    pub fn ts_ns(&self) -> i64 {
        self.record.ts_ns()
    }

    /// The entity the event is about: the host that sent a syslog message, the
    /// device a poll or message describes.
    pub fn entity(&self) -> Option<Entity> {
        match &self.record {
            Record::Syslog(r) => r.sender.map(|a| Entity::Ip(Addr::from(a))),
            Record::Device(r) => Some(r.entity.clone()),
        }
    }

    /// Rows this record becomes in the `events` table.
    pub fn rows(&self) -> usize {
        match &self.record {
            Record::Syslog(_) => 1,
            Record::Device(d) => d.samples.len().max(1),
        }
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
        // syslog
        text("facility", true),
        Field::new("severity", DataType::UInt8, true),
        text("hostname", true),
        text("appname", true),
        text("procid", true),
        text("msgid", true),
        text("structured_data", true),
        text("message", true),
        text("parse_error", true),
        text("auth_kind", true),
        text("auth_form", true),
        text("auth_service", true),
        text("auth_method", true),
        text("auth_user", true),
        text("auth_remote", true),
        Field::new("auth_count", DataType::UInt32, true),
        Field::new("auth_injection", DataType::Boolean, true),
        // SNMP and MQTT
        text("topic", true),
        text("metric", true),
        text("instance", true),
        Field::new("value", DataType::Float64, true),
        Field::new("raw", DataType::Float64, true),
        text("oid", true),
        Field::new("payload_bytes", DataType::UInt32, true),
    ]))
}

macro_rules! event_fields {
    ($($variant:ident = $name:literal,)*) => {
        /// A field of an event, as the `events` table names it: the one list the
        /// table's text columns, the counting rules (`[[count_rules]]`) and their
        /// docs read.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventField {
            $($variant,)*
        }

        impl EventField {
            /// Every field, in the table's column order.
            pub const ALL: &[EventField] = &[$(EventField::$variant,)*];

            /// The column's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(EventField::$variant => $name,)*
                }
            }
        }
    };
}

event_fields! {
    SourceKind = "source_kind",
    Source = "source",
    Entity = "entity",
    Protocol = "protocol",
    Facility = "facility",
    Severity = "severity",
    Hostname = "hostname",
    Appname = "appname",
    Procid = "procid",
    Msgid = "msgid",
    StructuredData = "structured_data",
    Message = "message",
    ParseError = "parse_error",
    AuthKind = "auth_kind",
    AuthForm = "auth_form",
    AuthService = "auth_service",
    AuthMethod = "auth_method",
    AuthUser = "auth_user",
    AuthRemote = "auth_remote",
    Topic = "topic",
    Metric = "metric",
    Instance = "instance",
}

impl EventField {
    pub fn from_name(name: &str) -> Option<EventField> {
        EventField::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Whether the table writes it as text (severity is a number).
    pub fn is_text(self) -> bool {
        self != EventField::Severity
    }

    /// The field's value in one row of the table, as text: a device record
    /// gives a row per `sample`. `entity` is the row's entity, written out.
    pub fn text<'a>(
        self,
        row: &'a EventRow,
        sample: Option<&'a Sample>,
        entity: Option<&'a str>,
    ) -> Option<std::borrow::Cow<'a, str>> {
        use EventField::*;
        use std::borrow::Cow::{Borrowed, Owned};
        let s = |v: &'a Option<String>| v.as_deref().map(Borrowed);
        match (&row.record, self) {
            (_, Source) => Some(Borrowed(&row.source)),
            (_, Entity) => entity.map(Borrowed),
            (Record::Syslog(_), SourceKind) => Some(Borrowed("syslog")),
            (Record::Device(d), SourceKind) => Some(Borrowed(d.kind.as_str())),
            (Record::Syslog(r), Protocol) => Some(Borrowed(r.protocol)),
            (Record::Device(d), Protocol) => Some(Borrowed(d.protocol)),
            (Record::Syslog(r), Facility) => r.facility.map(Borrowed),
            (Record::Syslog(r), Severity) => r.severity.map(|v| Owned(v.to_string())),
            (Record::Syslog(r), Hostname) => s(&r.hostname),
            (Record::Syslog(r), Appname) => s(&r.appname),
            (Record::Syslog(r), Procid) => s(&r.procid),
            (Record::Syslog(r), Msgid) => s(&r.msgid),
            (Record::Syslog(r), StructuredData) => s(&r.structured_data),
            (Record::Syslog(r), Message) => Some(Borrowed(&r.message)),
            (Record::Syslog(r), ParseError) => r.parse_error.map(Borrowed),
            (Record::Syslog(r), AuthKind) => r.auth.as_ref().map(|a| Borrowed(a.kind.as_str())),
            (Record::Syslog(r), AuthForm) => r.auth.as_ref().map(|a| Borrowed(a.form)),
            (Record::Syslog(r), AuthService) => r.auth.as_ref().and_then(|a| s(&a.service)),
            (Record::Syslog(r), AuthMethod) => r.auth.as_ref().and_then(|a| s(&a.method)),
            (Record::Syslog(r), AuthUser) => r.auth.as_ref().and_then(|a| s(&a.user)),
            (Record::Syslog(r), AuthRemote) => r.auth.as_ref().and_then(|a| {
                a.remote
                    .map(|ip| Owned(ip.to_string()))
                    .or_else(|| s(&a.remote_host))
            }),
            (Record::Device(d), Topic) => s(&d.topic),
            (Record::Device(_), Metric) => sample
                .map(|x| x.metric.as_str())
                .filter(|m| !m.is_empty())
                .map(Borrowed),
            (Record::Device(_), Instance) => sample.and_then(|x| s(&x.instance)),
            _ => None,
        }
    }
}

/// Converts event rows into one Arrow batch with [`events_schema`].
pub fn events_to_batch(rows: &[EventRow]) -> Result<RecordBatch, SchemaError> {
    let n: usize = rows.iter().map(EventRow::rows).sum();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut received = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut severity = UInt8Builder::with_capacity(n);
    let mut count = UInt32Builder::with_capacity(n);
    let mut injection = BooleanBuilder::with_capacity(n);
    let mut value = Float64Builder::with_capacity(n);
    let mut raw = Float64Builder::with_capacity(n);
    let mut oid = StringBuilder::with_capacity(n, 0);
    let mut payload = UInt32Builder::with_capacity(n);
    let fields: Vec<EventField> = EventField::ALL
        .iter()
        .copied()
        .filter(|f| f.is_text())
        .collect();
    let mut text: Vec<StringBuilder> = fields
        .iter()
        .map(|_| StringBuilder::with_capacity(n, n * 8))
        .collect();
    let mut entity = String::with_capacity(40);
    for row in rows {
        entity.clear();
        match row.entity() {
            Some(Entity::Ip(a)) => a.push_to(&mut entity),
            Some(Entity::Name(s)) => entity.push_str(&s),
            None => {}
        }
        let ent = Some(entity.as_str()).filter(|e| !e.is_empty());
        match &row.record {
            Record::Syslog(r) => {
                ts.append_value(r.ts_ns.div_euclid(1000));
                received.append_value(r.received_ns.div_euclid(1000));
                severity.append_option(r.severity);
                let auth = r.auth.as_ref();
                count.append_option(auth.map(|a| a.count));
                injection.append_option(auth.map(|a| a.injection));
                for (b, f) in text.iter_mut().zip(&fields) {
                    b.append_option(f.text(row, None, ent));
                }
                value.append_null();
                raw.append_null();
                oid.append_null();
                payload.append_null();
            }
            Record::Device(d) => {
                let none = [Sample {
                    metric: String::new(),
                    instance: None,
                    value: None,
                    raw: None,
                    oid: None,
                }];
                let samples = if d.samples.is_empty() {
                    &none[..]
                } else {
                    &d.samples[..]
                };
                for s in samples {
                    ts.append_value(d.ts_ns.div_euclid(1000));
                    received.append_value(d.received_ns.div_euclid(1000));
                    severity.append_null();
                    count.append_null();
                    injection.append_null();
                    for (b, f) in text.iter_mut().zip(&fields) {
                        b.append_option(f.text(row, Some(s), ent));
                    }
                    value.append_option(s.value.filter(|v| v.is_finite()));
                    raw.append_option(s.raw.filter(|v| v.is_finite()));
                    oid.append_option(s.oid.as_deref());
                    payload.append_option(d.payload_bytes);
                }
            }
        }
    }
    let mut text = text
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut cols: Vec<ArrayRef> = vec![Arc::new(ts.finish()), Arc::new(received.finish())];
    // source_kind, source, entity, protocol, facility
    cols.extend(text.by_ref().take(5));
    cols.push(Arc::new(severity.finish()));
    // hostname .. auth_remote
    cols.extend(text.by_ref().take(13));
    cols.push(Arc::new(count.finish()));
    cols.push(Arc::new(injection.finish()));
    // topic, metric, instance
    cols.extend(text);
    cols.push(Arc::new(value.finish()));
    cols.push(Arc::new(raw.finish()));
    cols.push(Arc::new(oid.finish()));
    cols.push(Arc::new(payload.finish()));
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
            parse_error: None,
            auth: Some(Box::new(AuthEvent {
                method: Some("password".into()),
                user: Some("root".into()),
                remote: "1.2.3.4".parse().ok(),
                port: Some(22),
                ..AuthEvent::new(AuthKind::Failure, "sshd_failed")
            })),
        };
        let b = events_to_batch(&[EventRow {
            source: "edge".into(),
            log_offset: None,
            record: Record::Syslog(rec),
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
        assert_eq!(col("auth_form"), "sshd_failed");
        assert_eq!(b.column_by_name("msgid").expect("msgid").null_count(), 1);
    }
}

#[cfg(test)]
mod auth_kind_tests {
    use super::AuthKind;

    #[test]
    fn all_is_in_code_order() {
        for (i, k) in AuthKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn a_device_record_is_one_row_per_sample() {
        let d = DeviceRecord {
            ts_ns: 5_000_000_000,
            received_ns: 5_000_000_000,
            kind: DeviceKind::Mqtt,
            protocol: "mqtt3.1.1",
            entity: Entity::Name("dev1".into()),
            topic: Some("sensors/dev1/env".into()),
            payload_bytes: Some(24),
            samples: vec![
                Sample {
                    metric: "env.temp".into(),
                    instance: None,
                    value: Some(21.5),
                    raw: None,
                    oid: None,
                },
                Sample {
                    metric: "env.hum".into(),
                    instance: None,
                    value: Some(f64::NAN),
                    raw: None,
                    oid: None,
                },
            ],
        };
        let b = events_to_batch(&[EventRow {
            source: "iot".into(),
            log_offset: None,
            record: Record::Device(d),
        }])
        .expect("batch");
        assert_eq!(b.num_rows(), 2);
        let s = |name: &str, i: usize| {
            let a = b.column_by_name(name).expect("column");
            arrow_array::cast::AsArray::as_string::<i32>(a.as_ref())
                .value(i)
                .to_string()
        };
        assert_eq!(s("entity", 0), "dev1");
        assert_eq!(s("metric", 1), "env.hum");
        assert_eq!(s("source_kind", 0), "mqtt");
        let v = b.column_by_name("value").expect("value");
        // NaN is written as null, never as a float NaN.
        assert_eq!(v.null_count(), 1);
        assert_eq!(b.column_by_name("message").expect("m").null_count(), 2);
    }
}
