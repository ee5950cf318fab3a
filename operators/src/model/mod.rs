//! Anomaly models: each network's normal, learned from its feature rows with
//! smartcore, and the score of a new row against it (docs/MODELS.md).
//!
//! A row is put in *model space* — each feature through its fitted
//! [`Scaling`], then a symmetric logarithm, `sign(x)·ln(1 + |x|)`, so that a
//! feature never seen moving in training (scale 1) weighs like one that moved a
//! hundredfold, not a millionfold. Two detectors are fitted there with
//! smartcore:
//! - PCA: the principal components that explain 90 % of the training variance
//!   (at most [`MAX_COMPONENTS`]); a row's *reconstruction error* is what those
//!   components cannot express — a combination of features training never saw;
//! - k-means: [`CLUSTERS`] clusters (seeded); a row's distance to the nearest
//!   centroid (recomputed here from the training assignments, which smartcore
//!   keeps private) — a kind of window far from every kind seen.
//!
//! Each is divided by its 90th percentile over the training rows and the score
//! is their mean: 1 is an ordinary training row's level. The threshold is the
//! score that rows of entities held out of the fit exceed at the chosen
//! false-positive rate (see [`fit`]). The
//! features that explain a score are those with the largest reconstruction
//! residuals.
//!
//! Scoring reads only the model file's numbers (means, components,
//! centroids): smartcore is needed to fit, not to score, and the file format is
//! this crate's, versioned.

mod fit;
mod scaling;
mod score;

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use fit::{FOLDS, FitOptions, HoldOut, TrainingSet, fit};
pub use scaling::{Scaling, percentile, skewness, sorted};
pub use score::{ModelCounters, ModelSet, ModelSpec, RELOAD_CHECK, ScoreModels};

/// What a model file says it is.
pub const FORMAT: &str = "amoskys-model";
/// The model file layout this build reads and writes.
pub const VERSION: u32 = 1;
/// The smartcore release models are fitted with (pinned in Cargo.toml).
pub const SMARTCORE: &str = "0.7.0";
/// Most principal components kept.
pub const MAX_COMPONENTS: usize = 40;
/// Share of the training variance the kept components explain.
pub const VARIANCE: f64 = 0.9;
/// Clusters of the k-means detector.
pub const CLUSTERS: usize = 8;
/// Rows the detectors are fitted on at most (a regular sample of the training
/// rows beyond that; the threshold is still taken over every training row).
pub const MAX_FIT_ROWS: usize = 20_000;
/// Whole values up to this have their model-space value computed once per
/// feature (see [`Prepared`]).
const SMALL: usize = 16;

/// Features named in an alert's evidence.
pub const EXPLAINED: usize = 5;

/// One feature of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFeature {
    pub name: String,
    pub dtype: String,
    pub scaling: Scaling,
    /// Median of the feature's values in training (null: never present).
    pub train_median: Option<f64>,
}

/// How a model was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub rows: usize,
    pub fit_rows: usize,
    pub windows: usize,
    pub entities: usize,
    /// First and last training window starts (UTC, microseconds).
    pub first_window_us: i64,
    pub last_window_us: i64,
    pub seed: u64,
    pub components: usize,
    pub variance_explained: f64,
    pub clusters: usize,
    /// The training rows' scores at these quantiles.
    pub score_quantiles: Vec<(f64, f64)>,
    /// What the threshold was set on.
    #[serde(default)]
    pub calibration: String,
    /// The held-out rows' scores (each by the model fitted without its
    /// entity's fold) at the same quantiles.
    #[serde(default)]
    pub held_out_quantiles: Vec<(f64, f64)>,
}

/// A fitted anomaly model, as its file holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub version: u32,
    pub smartcore: String,
    /// SHA-256 of the feature catalogue it was trained on (names and dtypes in
    /// column order), and its size.
    pub catalogue_sha256: String,
    pub catalogue_features: usize,
    pub features: Vec<ModelFeature>,
    /// PCA: the training mean in model space, and the kept components (one
    /// row of `features.len()` values each).
    pub mean: Vec<f64>,
    pub components: Vec<Vec<f64>>,
    /// k-means centroids in model space.
    pub centroids: Vec<Vec<f64>>,
    /// The training 90th percentiles of reconstruction error and centroid
    /// distance that the score divides by.
    pub normalizers: [f64; 2],
    pub false_positive_rate: f64,
    pub threshold: f64,
    pub training: TrainingSummary,
    /// With `train --labels`: a classifier of the labelled kinds of window.
    #[serde(default)]
    pub classifier: Option<Classifier>,
    /// What scoring takes ready-made.
    #[serde(skip)]
    prepared: Prepared,
}

/// What scoring takes ready-made, computed when a model is fitted or read.
///
/// Most features of most rows are null or 0, so a row in model space differs
/// from the *base* row (every feature null) in a few places. With δ = x − b,
/// the squared distances to the mean and to each centroid, and the component
/// coordinates, are the base row's plus terms in δ alone; the reconstruction
/// error is ‖x − μ‖² − Σ zⱼ² (the components are orthonormal). A row then
/// costs (components + centroids) products per feature that is not at its
/// base value, not per feature.
#[derive(Clone, Debug, Default, PartialEq)]
struct Prepared {
    /// Each feature's model-space value for null and for 0, the values most
    /// rows hold: computed once instead of two logarithms per value.
    fixed: Vec<[f64; 2]>,
    /// Each feature's model-space value for 1, 2, … [`SMALL`]: the counts
    /// most of the rest hold (`SMALL` values per feature).
    small: Vec<f64>,
    /// The base row.
    base: Vec<f64>,
    /// Per feature, `stride()` values: its loading on each component, then
    /// 2(bₖ − cₖ) for each centroid c, then 2(bₖ − μₖ).
    terms: Vec<f64>,
    /// The base row's coordinate on each component, its squared distance to
    /// each centroid and to the mean.
    base_z: Vec<f64>,
    base_centroids: Vec<f64>,
    base_mean: f64,
}

/// A multinomial logistic regression (smartcore's, L2-regularised) over model
/// space: which labelled kind a window looks like. Class 0 is `normal`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classifier {
    pub classes: Vec<String>,
    /// One row per class (one row in all for two classes: the second's
    /// log-odds), and the intercepts.
    pub coefficients: Vec<Vec<f64>>,
    pub intercept: Vec<f64>,
    /// Training rows per class.
    pub rows: Vec<usize>,
}

/// The class every row without a label has.
pub const NORMAL: &str = "normal";

/// L2 penalty of the classifier.
pub const CLASSIFIER_ALPHA: f64 = 1.0;

/// The catalogue's fingerprint: SHA-256 over `name:dtype\n` in column order.
pub fn catalogue_sha256<'a>(features: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, dtype) in features {
        h.update(name.as_bytes());
        h.update(b":");
        h.update(dtype.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// This build's feature catalogue: names and dtypes (`count`, `float`) in
/// column order, as `feature_metadata.json` writes them.
pub fn build_catalogue() -> (Vec<&'static str>, Vec<&'static str>) {
    crate::features::defs()
        .iter()
        .map(|d| {
            let dtype = match d.dtype {
                amoskys_schemas::FeatureDtype::Count => "count",
                amoskys_schemas::FeatureDtype::Float => "float",
            };
            (d.name, dtype)
        })
        .unzip()
}

/// Sum of products in eight lanes: floating-point addition is not
/// associative, so a plain sum runs one addition at a time; lanes let the
/// compiler use vector instructions. Training and scoring use the same
/// function, so a model's scores are the same wherever they are computed.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    lanes(a, b, |x, y| x * y)
}

/// Squared Euclidean distance, in eight lanes as [`dot`].
#[inline]
fn distance2(a: &[f64], b: &[f64]) -> f64 {
    lanes(a, b, |x, y| (x - y) * (x - y))
}

#[inline]
fn lanes(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let mut acc = [0.0f64; 8];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += f(x[i], y[i]);
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| f(*x, *y)).sum();
    acc.iter().sum::<f64>() + tail
}

#[inline]
fn squash(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

/// A score and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub score: f64,
    /// The features with the largest reconstruction residuals, largest first:
    /// column index and squared residual.
    pub top: Vec<(usize, f64)>,
}

impl Model {
    /// A row in model space.
    fn model_space(&self, values: &[f64]) -> Vec<f64> {
        let mut x = Vec::with_capacity(values.len());
        self.to_model_space(values, &mut x);
        x
    }

    fn to_model_space(&self, values: &[f64], x: &mut Vec<f64>) {
        x.clear();
        x.extend(
            self.features
                .iter()
                .zip(values)
                .zip(&self.prepared.fixed)
                .zip(self.prepared.small.chunks_exact(SMALL))
                .map(|(((f, &v), fixed), small)| {
                    if v.is_nan() {
                        fixed[0]
                    } else if v == 0.0 {
                        fixed[1]
                    } else if v >= 1.0 && v <= SMALL as f64 && v.fract() == 0.0 {
                        small[v as usize - 1]
                    } else {
                        squash(f.scaling.apply(v))
                    }
                }),
        );
    }

    /// Computes what scoring takes ready-made ([`Prepared`]).
    fn prepare(&mut self) {
        let fixed: Vec<[f64; 2]> = self
            .features
            .iter()
            .map(|f| {
                [
                    squash(f.scaling.apply(f64::NAN)),
                    squash(f.scaling.apply(0.0)),
                ]
            })
            .collect();
        let small = self
            .features
            .iter()
            .flat_map(|f| (1..=SMALL).map(|v| squash(f.scaling.apply(v as f64))))
            .collect();
        let base: Vec<f64> = fixed.iter().map(|f| f[0]).collect();
        let mut terms = Vec::with_capacity(base.len() * self.stride());
        for (k, b) in base.iter().enumerate() {
            terms.extend(self.components.iter().map(|c| c[k]));
            terms.extend(self.centroids.iter().map(|c| 2.0 * (b - c[k])));
            terms.push(2.0 * (b - self.mean[k]));
        }
        let centred: Vec<f64> = base.iter().zip(&self.mean).map(|(b, m)| b - m).collect();
        self.prepared = Prepared {
            base_z: self.components.iter().map(|c| dot(c, &centred)).collect(),
            base_centroids: self.centroids.iter().map(|c| distance2(c, &base)).collect(),
            base_mean: dot(&centred, &centred),
            fixed,
            small,
            base,
            terms,
        };
    }

    fn stride(&self) -> usize {
        self.components.len() + self.centroids.len() + 1
    }

    /// The class a row looks like and its probability, with a classifier.
    pub fn classify(&self, values: &[f64]) -> Option<(usize, f64)> {
        self.classifier.as_ref()?;
        self.classify_model_space(&self.model_space(values))
    }

    /// [`Model::classify`] of a row already in model space (what
    /// [`Model::score_value`] leaves in its scratch's first buffer).
    pub fn classify_model_space(&self, x: &[f64]) -> Option<(usize, f64)> {
        let c = self.classifier.as_ref()?;
        let logit = |j: usize| -> f64 {
            c.coefficients[j]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                + c.intercept[j]
        };
        if c.coefficients.len() == 1 {
            let p = 1.0 / (1.0 + (-logit(0)).exp());
            return Some(if p > 0.5 { (1, p) } else { (0, 1.0 - p) });
        }
        let z: Vec<f64> = (0..c.coefficients.len()).map(logit).collect();
        let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
        let sum: f64 = e.iter().sum();
        let (best, _) =
            e.iter().enumerate().fold(
                (0, f64::NEG_INFINITY),
                |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
            );
        Some((best, e[best] / sum))
    }

    /// Reconstruction error and distance to the nearest centroid of a feature
    /// row (catalogue order, NaN for null); the row in model space is left in
    /// `x`, the component coordinates in the first entries of `acc`.
    fn parts(&self, values: &[f64], x: &mut Vec<f64>, acc: &mut Vec<f64>) -> [f64; 2] {
        self.to_model_space(values, x);
        let p = &self.prepared;
        let (j, c) = (self.components.len(), self.centroids.len());
        let stride = self.stride();
        acc.clear();
        acc.extend_from_slice(&p.base_z);
        acc.resize(j + c, 0.0);
        let (mut to_mean, mut squares) = (p.base_mean, 0.0);
        for (k, (v, b)) in x.iter().zip(&p.base).enumerate() {
            let delta = v - b;
            if delta == 0.0 {
                continue;
            }
            let t = &p.terms[k * stride..(k + 1) * stride];
            for (a, w) in acc.iter_mut().zip(&t[..j + c]) {
                *a += w * delta;
            }
            to_mean += delta * (t[j + c] + delta);
            squares += delta * delta;
        }
        let explained: f64 = acc[..j].iter().map(|z| z * z).sum();
        // Rounding can take a zero a little below; a NaN (an infinite value)
        // stays NaN.
        let at_least_zero = |v: f64| if v < 0.0 { 0.0 } else { v };
        let pca = at_least_zero(to_mean - explained);
        let km = p
            .base_centroids
            .iter()
            .zip(&acc[j..])
            .map(|(base, lin)| at_least_zero(base + lin + squares))
            .fold(f64::INFINITY, f64::min);
        [pca, km]
    }

    fn combine(&self, p: [f64; 2]) -> f64 {
        0.5 * (p[0] / self.normalizers[0] + p[1] / self.normalizers[1])
    }

    /// The score of a feature row (catalogue order, NaN for null) alone,
    /// with `scratch` buffers reused from row to row: what every row pays.
    /// The row in model space is left in the first buffer.
    pub fn score_value(&self, values: &[f64], scratch: &mut (Vec<f64>, Vec<f64>)) -> f64 {
        let (x, acc) = scratch;
        self.combine(self.parts(values, x, acc))
    }

    /// The score of a feature row (catalogue order, NaN for null), and the
    /// features that explain it: the largest reconstruction residuals.
    pub fn score(&self, values: &[f64]) -> Score {
        let (mut x, mut acc) = (Vec::new(), Vec::new());
        let score = self.combine(self.parts(values, &mut x, &mut acc));
        let mut residuals: Vec<f64> = x.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        for (c, zj) in self.components.iter().zip(&acc) {
            for (r, ck) in residuals.iter_mut().zip(c) {
                *r -= zj * ck;
            }
        }
        let mut top: Vec<(usize, f64)> = residuals
            .iter()
            .enumerate()
            .map(|(k, r)| (k, r * r))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(EXPLAINED);
        Score { score, top }
    }

    /// The model file's text: the same model gives the same bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model serializes") + "\n"
    }

    /// Reads and checks a model file against the catalogue this build
    /// computes (`names` and `dtypes` in column order).
    pub fn load(path: &Path, names: &[&str], dtypes: &[&str]) -> Result<Model, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Model::from_bytes(&text, names, dtypes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// [`Model::load`] of bytes already read.
    pub fn from_bytes(bytes: &[u8], names: &[&str], dtypes: &[&str]) -> Result<Model, String> {
        let head: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a model file (not JSON: {e})"))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(format!(
                "not a model file (no \"format\": \"{FORMAT}\"); make one with `amoskys-pipeline train`"
            ));
        }
        let version = head.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(VERSION)) {
            return Err(format!(
                "model file format version {}; this build reads version {VERSION}: train the model again with this build",
                version.map_or("unknown".into(), |v| v.to_string())
            ));
        }
        let sc = head.get("smartcore").and_then(|v| v.as_str());
        if sc != Some(SMARTCORE) {
            return Err(format!(
                "model fitted with smartcore {}; this build uses smartcore {SMARTCORE}: train the model again with this build",
                sc.unwrap_or("unknown")
            ));
        }
        let model: Model =
            serde_json::from_value(head).map_err(|e| format!("corrupt model file: {e}"))?;
        let want = catalogue_sha256(names.iter().copied().zip(dtypes.iter().copied()));
        // The features listed, in order, must be this build's catalogue, and
        // the catalogue the file names.
        let listed = catalogue_sha256(
            model
                .features
                .iter()
                .map(|f| (f.name.as_str(), f.dtype.as_str())),
        );
        if listed != want || model.features.len() != names.len() {
            return Err(format!(
                "model trained on another feature catalogue ({} features, sha256 {}); this build computes {} features (sha256 {}): train the model again on this build's output",
                model.features.len(),
                short(&listed),
                names.len(),
                short(&want)
            ));
        }
        if model.catalogue_sha256 != listed || model.catalogue_features != names.len() {
            return Err(
                "corrupt model file: its features are not the catalogue it names".to_string(),
            );
        }
        model.check()?;
        let mut model = model;
        model.prepare();
        Ok(model)
    }

    /// Shapes and numbers consistent with each other.
    fn check(&self) -> Result<(), String> {
        let d = self.features.len();
        let corrupt = |what: &str| Err(format!("corrupt model file: {what}"));
        if d != self.catalogue_features || self.mean.len() != d {
            return corrupt("feature count and mean disagree");
        }
        if self.components.is_empty() || self.components.iter().any(|c| c.len() != d) {
            return corrupt("components do not match the features");
        }
        if self.centroids.is_empty() || self.centroids.iter().any(|c| c.len() != d) {
            return corrupt("centroids do not match the features");
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if self.features.iter().any(|f| {
            let s = &f.scaling;
            !(s.scale > 0.0
                && s.scale.is_finite()
                && s.center.is_finite()
                && s.impute_value.is_finite())
        }) {
            return corrupt("a feature's transform is not usable (scale must be above 0)");
        }
        if !finite(&self.mean)
            || !self.components.iter().all(|c| finite(c))
            || !self.centroids.iter().all(|c| finite(c))
            || !finite(&self.normalizers)
            || self.normalizers.iter().any(|n| *n <= 0.0)
            || !self.threshold.is_finite()
        {
            return corrupt("a number is not finite");
        }
        if let Some(c) = &self.classifier {
            let k = c.classes.len();
            let r = if k == 2 { 1 } else { k };
            if k < 2
                || c.classes[0] != NORMAL
                || c.coefficients.len() != r
                || c.intercept.len() != r
                || c.coefficients.iter().any(|w| w.len() != d || !finite(w))
                || !finite(&c.intercept)
            {
                return corrupt("the classifier does not match the features");
            }
        }
        Ok(())
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

#[cfg(test)]
mod tests;
