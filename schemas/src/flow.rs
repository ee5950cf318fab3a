use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, StringBuilder, TimestampMicrosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::addr::Addr;
use crate::error::SchemaError;

/// Why a flow record was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// No packet for longer than the idle timeout.
    Idle,
    /// The flow lasted longer than the active timeout; later packets start a new record.
    Active,
    /// TCP FIN seen from both sides.
    Fin,
    /// TCP RST seen.
    Rst,
    /// Expired early because the flow table was full.
    Evicted,
    /// Still open when the input ended.
    EndOfInput,
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Idle => "idle_timeout",
            EndReason::Active => "active_timeout",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::EndOfInput => "end_of_input",
        }
    }
}

/// Count, min, max, mean and (population) standard deviation of a series.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Summary {
    pub n: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

/// A bidirectional flow. "fwd" is the originator's direction (the sender of the
/// flow's first packet, or the receiver of a SYN-ACK that opened the record).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    pub community_id: String,
    pub proto: u8,
    pub src: Addr,
    pub sport: u16,
    pub dst: Addr,
    pub dport: u16,
    pub first_ns: i64,
    pub last_ns: i64,
    pub packets_fwd: u64,
    pub packets_bwd: u64,
    pub bytes_fwd: u64,
    pub bytes_bwd: u64,
    pub tcp_flags_fwd: u8,
    pub tcp_flags_bwd: u8,
    pub fragments: u64,
    pub size_fwd: Summary,
    pub size_bwd: Summary,
    /// Inter-arrival times in seconds; `n` is the number of gaps (packets - 1).
    pub iat_fwd: Summary,
    pub iat_bwd: Summary,
    pub end_reason: EndReason,
    /// What the flow carries at the application layer, when anything was read.
    pub app: Option<Box<crate::app::AppInfo>>,
}

/// The `flows` table's columns, in order.
pub fn flows_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new(crate::cols::COMMUNITY_ID, DataType::Utf8, false),
        Field::new("proto", DataType::UInt8, false),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("src_port", DataType::UInt16, false),
        Field::new("dst_ip", DataType::Utf8, false),
        Field::new("dst_port", DataType::UInt16, false),
        Field::new(crate::cols::FIRST_TS, ts(), false),
        Field::new(crate::cols::LAST_TS, ts(), false),
        Field::new("duration_s", DataType::Float64, false),
        Field::new("packets_fwd", DataType::UInt64, false),
        Field::new("packets_bwd", DataType::UInt64, false),
        Field::new("bytes_fwd", DataType::UInt64, false),
        Field::new("bytes_bwd", DataType::UInt64, false),
        Field::new("tcp_flags_fwd", DataType::UInt8, false),
        Field::new("tcp_flags_bwd", DataType::UInt8, false),
        Field::new("fragments", DataType::UInt64, false),
    ];
    for stat in ["size", "iat"] {
        for dir in ["fwd", "bwd"] {
            for s in ["min", "max", "mean", "std"] {
                fields.push(Field::new(
                    format!("{stat}_{dir}_{s}"),
                    DataType::Float64,
                    true,
                ));
            }
        }
    }
    fields.push(Field::new("end_reason", DataType::Utf8, false));
    for (name, _) in crate::app::TEXT_COLUMNS {
        fields.push(Field::new(*name, DataType::Utf8, true));
    }
    for (name, _) in crate::app::BYTE_COLUMNS {
        fields.push(Field::new(*name, DataType::UInt8, true));
    }
    fields.push(Field::new("http_status", DataType::UInt16, true));
    fields.push(Field::new("http_content_length", DataType::UInt64, true));
    for name in ["tls_not_before", "tls_not_after"] {
        fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
    }
    fields.push(Field::new("tls_self_signed", DataType::Boolean, true));
    fields.push(Field::new("login_attempts", DataType::UInt32, true));
    fields.push(Field::new("login_failures", DataType::UInt32, true));
    fields.push(Field::new("app_anomalies", DataType::UInt64, true));
    Arc::new(Schema::new(fields))
}

/// Converts flow records into one Arrow batch with [`flows_schema`].
pub fn flows_to_batch(rows: &[FlowRecord]) -> Result<RecordBatch, SchemaError> {
    let n = rows.len();
    let mut cid = StringBuilder::with_capacity(n, n * 30);
    let mut proto = UInt8Builder::with_capacity(n);
    let mut src = StringBuilder::with_capacity(n, n * 15);
    let mut sport = UInt16Builder::with_capacity(n);
    let mut dst = StringBuilder::with_capacity(n, n * 15);
    let mut dport = UInt16Builder::with_capacity(n);
    let mut first = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut last = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut dur = Float64Builder::with_capacity(n);
    let mut counts: [UInt64Builder; 5] = std::array::from_fn(|_| UInt64Builder::with_capacity(n));
    let mut flags: [UInt8Builder; 2] = std::array::from_fn(|_| UInt8Builder::with_capacity(n));
    let mut stats: Vec<Float64Builder> =
        (0..16).map(|_| Float64Builder::with_capacity(n)).collect();
    let mut reason = StringBuilder::with_capacity(n, n * 8);
    let with_app = rows.iter().filter(|r| r.app.is_some()).count();
    let mut app_text: Vec<StringBuilder> = crate::app::TEXT_COLUMNS
        .iter()
        .map(|_| StringBuilder::with_capacity(n, with_app * 8))
        .collect();
    let mut app_bytes: Vec<UInt8Builder> = crate::app::BYTE_COLUMNS
        .iter()
        .map(|_| UInt8Builder::with_capacity(n))
        .collect();
    let mut http_status = UInt16Builder::with_capacity(n);
    let mut http_length = UInt64Builder::with_capacity(n);
    let mut validity: [_; 2] =
        std::array::from_fn(|_| TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"));
    let mut self_signed = BooleanBuilder::with_capacity(n);
    let mut logins: [UInt32Builder; 2] = std::array::from_fn(|_| UInt32Builder::with_capacity(n));
    let mut anomalies = UInt64Builder::with_capacity(n);
    let mut text = String::with_capacity(40);
    for r in rows {
        cid.append_value(&r.community_id);
        proto.append_value(r.proto);
        text.clear();
        r.src.push_to(&mut text);
        src.append_value(&text);
        sport.append_value(r.sport);
        text.clear();
        r.dst.push_to(&mut text);
        dst.append_value(&text);
        dport.append_value(r.dport);
        first.append_value(r.first_ns.div_euclid(1000));
        last.append_value(r.last_ns.div_euclid(1000));
        dur.append_value((r.last_ns - r.first_ns) as f64 / 1e9);
        for (b, v) in counts.iter_mut().zip([
            r.packets_fwd,
            r.packets_bwd,
            r.bytes_fwd,
            r.bytes_bwd,
            r.fragments,
        ]) {
            b.append_value(v);
        }
        flags[0].append_value(r.tcp_flags_fwd);
        flags[1].append_value(r.tcp_flags_bwd);
        let sums = [&r.size_fwd, &r.size_bwd, &r.iat_fwd, &r.iat_bwd];
        for (i, s) in sums.into_iter().enumerate() {
            let b = &mut stats[i * 4..i * 4 + 4];
            if s.n == 0 {
                b.iter_mut().for_each(|b| b.append_null());
            } else {
                b[0].append_value(s.min);
                b[1].append_value(s.max);
                b[2].append_value(s.mean);
                b[3].append_value(s.std);
            }
        }
        reason.append_value(r.end_reason.as_str());
        match r.app.as_deref() {
            Some(a) => {
                for (b, (_, get)) in app_text.iter_mut().zip(crate::app::TEXT_COLUMNS) {
                    b.append_option(get(a));
                }
                for (b, (_, get)) in app_bytes.iter_mut().zip(crate::app::BYTE_COLUMNS) {
                    b.append_option(get(a));
                }
                http_status.append_option(a.http_status);
                http_length.append_option(a.http_content_length);
                for (b, t) in validity.iter_mut().zip([a.tls_not_before, a.tls_not_after]) {
                    b.append_option(t.map(|s| s.saturating_mul(1_000_000)));
                }
                self_signed.append_option(a.tls_self_signed);
                logins[0].append_option(a.login_attempts);
                logins[1].append_option(a.login_failures);
                anomalies.append_value(u64::from(a.anomalies));
            }
            None => {
                app_text.iter_mut().for_each(|b| b.append_null());
                app_bytes.iter_mut().for_each(|b| b.append_null());
                http_status.append_null();
                http_length.append_null();
                validity.iter_mut().for_each(|b| b.append_null());
                self_signed.append_null();
                logins.iter_mut().for_each(|b| b.append_null());
                anomalies.append_null();
            }
        }
    }
    let [pf, pb, bf, bb, fr] = counts;
    let [ff, fb] = flags;
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(cid.finish()),
        Arc::new(proto.finish()),
        Arc::new(src.finish()),
        Arc::new(sport.finish()),
        Arc::new(dst.finish()),
        Arc::new(dport.finish()),
        Arc::new(first.finish()),
        Arc::new(last.finish()),
        Arc::new(dur.finish()),
    ];
    for mut b in [pf, pb, bf, bb] {
        cols.push(Arc::new(b.finish()));
    }
    let (mut ff, mut fb, mut fr) = (ff, fb, fr);
    cols.push(Arc::new(ff.finish()));
    cols.push(Arc::new(fb.finish()));
    cols.push(Arc::new(fr.finish()));
    for mut b in stats {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(reason.finish()));
    for mut b in app_text {
        cols.push(Arc::new(b.finish()));
    }
    for mut b in app_bytes {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(http_status.finish()));
    cols.push(Arc::new(http_length.finish()));
    for mut b in validity {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(self_signed.finish()));
    for mut b in logins {
        cols.push(Arc::new(b.finish()));
    }
    cols.push(Arc::new(anomalies.finish()));
    Ok(RecordBatch::try_new(flows_schema(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_matches_schema_and_nulls_empty_summaries() {
        let r = FlowRecord {
            community_id: "1:x".into(),
            proto: 6,
            src: Addr::v4([10, 0, 0, 1]),
            sport: 1234,
            dst: Addr::v4([10, 0, 0, 2]),
            dport: 80,
            first_ns: 1_500_000,
            last_ns: 2_500_000_000,
            packets_fwd: 1,
            packets_bwd: 0,
            bytes_fwd: 60,
            bytes_bwd: 0,
            tcp_flags_fwd: 2,
            tcp_flags_bwd: 0,
            fragments: 0,
            size_fwd: Summary {
                n: 1,
                min: 60.0,
                max: 60.0,
                mean: 60.0,
                std: 0.0,
            },
            size_bwd: Summary::default(),
            iat_fwd: Summary::default(),
            iat_bwd: Summary::default(),
            end_reason: EndReason::Idle,
            app: None,
        };
        let b = flows_to_batch(&[r]).expect("batch");
        assert_eq!(b.num_columns(), flows_schema().fields().len());
        let col = b.column_by_name("size_bwd_mean").expect("column");
        assert_eq!(col.null_count(), 1);
        let col = b.column_by_name("size_fwd_mean").expect("column");
        assert_eq!(col.null_count(), 0);
    }
}
