//! Cross-source features: what one source saw of an entity in a window, set
//! against what another saw of it. Computed on the merged row, so each is null
//! unless both sources saw the entity in the window.

use std::sync::OnceLock;

use amoskys_schemas::{FeatureDef, FeatureDtype};

/// A ratio of sums of features from different sources.
pub struct CrossSpec {
    pub def: FeatureDef,
    num: &'static [&'static str],
    den: &'static [&'static str],
    scale: f64,
}

const fn cross(
    name: &'static str,
    source: &'static str,
    unit: &'static str,
    description: &'static str,
    num: &'static [&'static str],
    den: &'static [&'static str],
    scale: f64,
) -> CrossSpec {
    CrossSpec {
        def: FeatureDef {
            name,
            family: "cross-source",
            source,
            unit,
            dtype: FeatureDtype::Float,
            description,
            null_when: Some(
                "either source did not see the entity in the window, or the denominator is 0",
            ),
        },
        num,
        den,
        scale,
    }
}

/// The cross-source features, in column order.
pub static CROSS: &[CrossSpec] = &[
    cross(
        "auth_failures_per_conn_in",
        "syslog+pcap",
        "ratio",
        "`auth_failures` the host logged over the TCP connection attempts it received \
         (`conn_attempts_in`): many failures per connection is password guessing over \
         kept-open sessions.",
        &["auth_failures"],
        &["conn_attempts_in"],
        1.0,
    ),
    cross(
        "auth_failures_as_remote_per_conn_out",
        "syslog+pcap",
        "ratio",
        "Failed logins other hosts logged naming the entity (`auth_failures_as_remote`) \
         over the TCP connection attempts it made (`conn_attempts_out`).",
        &["auth_failures_as_remote"],
        &["conn_attempts_out"],
        1.0,
    ),
    cross(
        "syslog_messages_per_kpacket",
        "syslog+pcap",
        "messages/1000 packets",
        "Syslog messages from the host per thousand packets it sent or received: how \
         loud its logs are for its traffic.",
        &["syslog_messages"],
        &["packets_out", "packets_in"],
        1000.0,
    ),
];

/// A cross-source feature's column and its terms' columns (numerator, denominator).
type Columns = (usize, Vec<usize>, Vec<usize>);

/// Fills the cross-source features of a merged row (`values` in catalogue order).
pub fn fill_cross(values: &mut [f64]) {
    static COLS: OnceLock<Vec<Columns>> = OnceLock::new();
    let cols = COLS.get_or_init(|| {
        let defs = super::defs();
        let col = |n: &str| {
            defs.iter()
                .position(|d| d.name == n)
                .expect("a cross-source feature's term is in the catalogue")
        };
        CROSS
            .iter()
            .map(|c| {
                (
                    col(c.def.name),
                    c.num.iter().map(|n| col(n)).collect(),
                    c.den.iter().map(|n| col(n)).collect(),
                )
            })
            .collect()
    });
    for ((at, num, den), spec) in cols.iter().zip(CROSS) {
        let sum = |c: &[usize]| c.iter().map(|&i| values[i]).sum::<f64>();
        let (n, d) = (sum(num), sum(den));
        // NaN (a term's family was null) propagates through the sums.
        values[*at] = if n.is_nan() || d.is_nan() || d <= 0.0 {
            f64::NAN
        } else {
            spec.scale * n / d
        };
    }
}
