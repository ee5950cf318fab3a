//! Helpers shared by the benchmarks in benches/.

/// The median of a non-empty list of measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
