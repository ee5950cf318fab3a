//! What an agent answered, copied out of snmp2's borrowed PDU: owned OIDs and
//! values, so a poll can keep them across requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// An OID as its sub-identifiers. `Vec<u32>` compares lexicographically, which
/// is SNMP's OID order.
pub(crate) type Oid = Vec<u32>;

/// Every varbind one poll received, by OID.
pub(crate) type Readings = BTreeMap<Oid, Value>;

/// A varbind's value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Integer(i64),
    /// Gauge32 and Unsigned32 share a tag.
    Gauge32(u32),
    Counter32(u32),
    Counter64(u64),
    TimeTicks(u32),
    OctetString(Vec<u8>),
    ObjectId(Oid),
    /// Any other type (IpAddress, Opaque, NULL, ...), by name.
    Other(&'static str),
    /// noSuchObject or noSuchInstance: the agent does not have it.
    Missing,
    EndOfMibView,
}

impl Value {
    /// The ASN.1 type's name, for logs.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Integer(_) => "INTEGER",
            Value::Gauge32(_) => "Gauge32",
            Value::Counter32(_) => "Counter32",
            Value::Counter64(_) => "Counter64",
            Value::TimeTicks(_) => "TimeTicks",
            Value::OctetString(_) => "OCTET STRING",
            Value::ObjectId(_) => "OBJECT IDENTIFIER",
            Value::Other(t) => t,
            Value::Missing => "noSuchObject",
            Value::EndOfMibView => "endOfMibView",
        }
    }

    /// Whether the agent has no value here (not an error: metrics an agent does
    /// not implement are simply absent).
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Value::Missing | Value::EndOfMibView)
    }
}

/// Dotted form, without a leading dot: `1.3.6.1.2.1.1.3.0`.
pub(crate) fn oid_string(oid: &[u32]) -> String {
    let mut s = String::with_capacity(oid.len() * 3);
    for (i, n) in oid.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        let _ = write!(s, "{n}");
    }
    s
}

/// `base` followed by `tail`.
pub(crate) fn join(base: &[u32], tail: &[u32]) -> Oid {
    let mut v = Vec::with_capacity(base.len() + tail.len());
    v.extend_from_slice(base);
    v.extend_from_slice(tail);
    v
}

/// Converts snmp2's value; a type it decodes but we never read becomes `Other`.
pub(crate) fn from_snmp2(v: snmp2::Value<'_>) -> Value {
    use snmp2::Value as V;
    match v {
        V::Integer(i) => Value::Integer(i),
        V::Unsigned32(u) => Value::Gauge32(u),
        V::Counter32(c) => Value::Counter32(c),
        V::Counter64(c) => Value::Counter64(c),
        V::Timeticks(t) => Value::TimeTicks(t),
        V::OctetString(s) => Value::OctetString(s.to_vec()),
        V::ObjectIdentifier(o) => match oid_from_snmp2(&o) {
            Some(o) => Value::ObjectId(o),
            None => Value::Other("OBJECT IDENTIFIER (sub-identifier over 32 bits)"),
        },
        V::NoSuchObject | V::NoSuchInstance => Value::Missing,
        V::EndOfMibView => Value::EndOfMibView,
        V::Boolean(_) => Value::Other("BOOLEAN"),
        V::Null => Value::Other("NULL"),
        V::IpAddress(_) => Value::Other("IpAddress"),
        V::Opaque(_) => Value::Other("Opaque"),
        _ => Value::Other("constructed"),
    }
}

/// snmp2's OID as sub-identifiers; `None` when one does not fit 32 bits.
pub(crate) fn oid_from_snmp2(o: &snmp2::Oid<'_>) -> Option<Oid> {
    o.iter()?.map(|n| u32::try_from(n).ok()).collect()
}

/// Our OID as snmp2's.
pub(crate) fn oid_to_snmp2(o: &[u32]) -> Option<snmp2::Oid<'static>> {
    let arcs: Vec<u64> = o.iter().map(|&n| u64::from(n)).collect();
    snmp2::Oid::from(&arcs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_round_trip_through_snmp2() {
        let o = vec![1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 4_000_000_000];
        let s = oid_to_snmp2(&o).expect("valid OID");
        assert_eq!(oid_from_snmp2(&s), Some(o.clone()));
        assert_eq!(oid_string(&o), s.to_id_string());
    }

    #[test]
    fn oids_order_as_snmp_does() {
        // 1.3.6.1.2.1.2.2.1.2.10 comes after ...2.2.1.2.9 and before ...2.2.1.3.
        let a = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 9];
        let b = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 10];
        let c = vec![1, 3, 6, 1, 2, 1, 2, 2, 1, 3];
        assert!(a < b && b < c);
    }
}
