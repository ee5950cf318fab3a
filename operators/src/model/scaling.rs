//! The transform that makes a feature column model-ready, fitted on training
//! rows: one implementation for `export-training`, `train` and scoring.
//!
//! 1. impute: a count that is null (its source did not see the entity) is 0;
//!    any other null is the training median of the feature (0 if it has none);
//! 2. log-transform: `log1p` when the imputed training values are all ≥ 0 and
//!    their skewness is above 1 (applied to later values as
//!    `sign(x)·log1p(|x|)`, the same for x ≥ 0 and defined for a negative
//!    value training never had);
//! 3. robust-scale: subtract the training median and divide by the
//!    interquartile range (numpy's linear percentiles; a zero range divides
//!    by 1).

use serde::{Deserialize, Serialize};

/// One feature's fitted transform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Nulls become 0 (counts) rather than `impute_value`.
    pub impute_zero: bool,
    pub impute_value: f64,
    pub log1p: bool,
    pub center: f64,
    pub scale: f64,
    /// Training rows where the feature was null.
    pub train_nulls: usize,
}

impl Scaling {
    /// Fits the transform to a training column (NaN for null); `is_count`
    /// for features of dtype `count`.
    pub fn fit(train: &[f64], is_count: bool) -> Scaling {
        let present = sorted(train.iter().copied().filter(|v| !v.is_nan()));
        let impute_value = if is_count {
            0.0
        } else {
            percentile(&present, 0.5)
        };
        let imputed: Vec<f64> = train
            .iter()
            .map(|&v| if v.is_nan() { impute_value } else { v })
            .collect();
        let log1p = imputed.iter().all(|v| *v >= 0.0) && skewness(&imputed) > 1.0;
        let tr = sorted(imputed.iter().map(|&v| if log1p { v.ln_1p() } else { v }));
        let iqr = percentile(&tr, 0.75) - percentile(&tr, 0.25);
        Scaling {
            impute_zero: is_count,
            impute_value,
            log1p,
            center: percentile(&tr, 0.5),
            scale: if iqr > 0.0 && iqr.is_finite() {
                iqr
            } else {
                1.0
            },
            train_nulls: train.len() - present.len(),
        }
    }

    /// A value (NaN for null) transformed.
    #[inline]
    pub fn apply(&self, v: f64) -> f64 {
        let v = if v.is_nan() { self.impute_value } else { v };
        let v = if self.log1p {
            v.signum() * v.abs().ln_1p()
        } else {
            v
        };
        (v - self.center) / self.scale
    }

    /// `"zero"` or `"train_median"`: how nulls are filled.
    pub fn impute_name(&self) -> &'static str {
        if self.impute_zero {
            "zero"
        } else {
            "train_median"
        }
    }
}

/// numpy's default ("linear") percentile of sorted values; 0 of none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The values, sorted (total order).
pub fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut s: Vec<f64> = v.collect();
    s.sort_by(f64::total_cmp);
    s
}

/// Sample skewness (Fisher–Pearson, population moments); 0 for a constant.
pub fn skewness(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / n;
    let m2 = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let m3 = v.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n;
    if m2 <= 0.0 { 0.0 } else { m3 / m2.powf(1.5) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [25, 50, 75, 90]) = 1.75, 2.5, 3.25, 3.7
        let v = [1.0, 2.0, 3.0, 4.0];
        for (q, want) in [(0.25, 1.75), (0.5, 2.5), (0.75, 3.25), (0.9, 3.7)] {
            assert!((percentile(&v, q) - want).abs() < 1e-12, "{q}");
        }
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn skewness_of_known_samples() {
        // scipy.stats.skew([1, 2, 3, 10]) = 45 / 12.5^1.5 = 1.0182...
        assert!((skewness(&[1.0, 2.0, 3.0, 10.0]) - 1.018_2).abs() < 1e-3);
        assert_eq!(skewness(&[5.0; 10]), 0.0);
    }

    #[test]
    fn counts_impute_zero_gauges_the_median_and_skewed_columns_are_logged() {
        let count = Scaling::fit(&[f64::NAN, 1.0, 2.0, 3.0, 100.0, 1000.0], true);
        assert!(count.impute_zero && count.log1p);
        assert_eq!(count.train_nulls, 1);
        // A null count is a zero count.
        assert_eq!(count.apply(f64::NAN), count.apply(0.0));
        let gauge = Scaling::fit(&[f64::NAN, 1.0, 2.0, 3.0], false);
        assert_eq!((gauge.impute_value, gauge.log1p), (2.0, false));
        assert_eq!(gauge.apply(f64::NAN), gauge.apply(2.0));
        // A constant column divides by 1.
        let flat = Scaling::fit(&[4.0; 5], false);
        assert_eq!((flat.scale, flat.apply(6.0)), (1.0, 2.0));
        // A negative value where training had none is finite, not NaN.
        assert!(count.apply(-5.0).is_finite() && count.apply(-5.0) < count.apply(0.0));
    }
}
