//! Fitting a model: the model of normal (smartcore's PCA and k-means) and,
//! with labels, the classifier (smartcore's logistic regression).
//!
//! The threshold is set on rows the model did not learn from: the training
//! rows are split into [`FOLDS`] folds (by host or by stretch of time, see
//! [`HoldOut`]), a model is fitted without each fold and scores it, and the
//! threshold is the score those held-out rows exceed at the chosen
//! false-positive rate. A threshold set on the rows a model was fitted to is
//! too low for what it will score: hosts and hours it never saw.

use amoskys_schemas::stable_hash;
use smartcore::cluster::kmeans::{KMeans, KMeansParameters};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linalg::traits::evd::EVDDecomposable;

use super::*;

/// Folds of entities the threshold is calibrated over.
pub const FOLDS: usize = 5;

/// What the threshold's held-out rows are held out by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HoldOut {
    /// Hosts: every window of an entity in one fold (a hash of the entity),
    /// so held-out rows are of hosts the fit never saw. For a model that
    /// will meet hosts and networks it was not trained on.
    #[default]
    Hosts,
    /// Stretches of time: the distinct windows cut into [`FOLDS`] stretches,
    /// so held-out rows are of other times of the hosts the fit saw. A lower
    /// threshold: more sensitive on the network trained on, more false
    /// alarms on new hosts.
    Time,
}

impl HoldOut {
    pub fn name(self) -> &'static str {
        match self {
            HoldOut::Hosts => "hosts",
            HoldOut::Time => "time",
        }
    }

    /// The fold of each row, given its entity and window start.
    pub fn folds<'a>(self, rows: impl Iterator<Item = (&'a str, i64)> + Clone) -> Vec<u8> {
        match self {
            HoldOut::Hosts => rows
                .map(|(e, _)| (stable_hash(e) % FOLDS as u64) as u8)
                .collect(),
            HoldOut::Time => {
                let mut windows: Vec<i64> = rows.clone().map(|(_, w)| w).collect();
                windows.sort_unstable();
                windows.dedup();
                rows.map(|(_, w)| {
                    let rank = windows.binary_search(&w).unwrap_or(0);
                    (rank * FOLDS / windows.len()) as u8
                })
                .collect()
            }
        }
    }
}

/// What a model is fitted on: the features table's columns (NaN for null)
/// and which of their rows to train on.
pub struct TrainingSet<'a> {
    pub names: &'a [String],
    pub dtypes: &'a [String],
    /// Every row read, column by column.
    pub columns: &'a [Vec<f64>],
    /// The training rows among them, in a fixed order.
    pub rows: Vec<usize>,
    /// The fold of each training row ([`HoldOut::folds`]) and what the folds
    /// are made of.
    pub folds: Vec<u8>,
    pub hold_out: HoldOut,
    pub windows: usize,
    pub entities: usize,
    pub first_window_us: i64,
    pub last_window_us: i64,
}

/// Choices of a fit.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    pub false_positive_rate: f64,
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            false_positive_rate: 0.001,
            seed: 7,
        }
    }
}

const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

/// Fits a model to `set` (smartcore's PCA and k-means, seeded) and sets its
/// threshold on held-out entities.
pub fn fit(set: &TrainingSet, opts: FitOptions) -> Result<Model, String> {
    let d = set.names.len();
    let n = set.rows.len();
    if d == 0 || set.columns.len() != d || set.dtypes.len() != d || set.folds.len() != n {
        return Err("no feature columns to train on".into());
    }
    if n < CLUSTERS * 2 {
        return Err(format!(
            "{n} training row(s): at least {} are needed (a few minutes of traffic)",
            CLUSTERS * 2
        ));
    }
    if !(opts.false_positive_rate > 0.0 && opts.false_positive_rate < 1.0) {
        return Err(format!(
            "false-positive rate {} must be above 0 and below 1",
            opts.false_positive_rate
        ));
    }
    let (mut model, in_sample) = fit_normal(set, &set.rows, opts.seed)?;
    let held_out = held_out_scores(set, opts.seed)?;
    let quantiles = |scores: &[f64]| -> Vec<(f64, f64)> {
        QUANTILES
            .iter()
            .map(|&q| (q, percentile(scores, q)))
            .collect()
    };
    let t = &mut model.training;
    t.windows = set.windows;
    t.entities = set.entities;
    t.first_window_us = set.first_window_us;
    t.last_window_us = set.last_window_us;
    t.score_quantiles = quantiles(&in_sample);
    let calibration = match &held_out {
        Some((scores, folds)) => {
            t.held_out_quantiles = quantiles(scores);
            t.calibration = format!(
                "{} rows held out by {} in {folds} folds",
                scores.len(),
                set.hold_out.name()
            );
            scores
        }
        None => {
            t.calibration = format!(
                "training rows (too few {} to hold any out)",
                set.hold_out.name()
            );
            &in_sample
        }
    };
    model.false_positive_rate = opts.false_positive_rate;
    model.threshold = percentile(calibration, 1.0 - opts.false_positive_rate);
    Ok(model)
}

/// Each training row's score by a model fitted without its fold, sorted, and
/// the number of folds; `None` with fewer than two folds to hold out.
fn held_out_scores(set: &TrainingSet, seed: u64) -> Result<Option<(Vec<f64>, usize)>, String> {
    let mut folds = set.folds.clone();
    folds.sort_unstable();
    folds.dedup();
    if folds.len() < 2 {
        return Ok(None);
    }
    // One fold per core at a time: each holds a sample of its own.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<Result<Vec<f64>, String>> = Vec::with_capacity(folds.len());
    for batch in folds.chunks(cores) {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&fold| s.spawn(move || fold_scores(set, fold, seed)))
                .collect();
            results.extend(handles.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a fold's fit panicked".into()))
            }));
        });
    }
    let mut scores = Vec::with_capacity(set.rows.len());
    for r in results {
        scores.extend(r?);
    }
    if scores.is_empty() {
        return Ok(None);
    }
    Ok(Some((sorted(scores.into_iter()), folds.len())))
}

/// The scores of `fold`'s rows by a model fitted to the other folds' (none
/// when those are too few to fit).
fn fold_scores(set: &TrainingSet, fold: u8, seed: u64) -> Result<Vec<f64>, String> {
    let mut train = Vec::with_capacity(set.rows.len());
    let mut held = Vec::new();
    for (&i, &f) in set.rows.iter().zip(&set.folds) {
        if f == fold {
            held.push(i)
        } else {
            train.push(i)
        }
    }
    if train.len() < CLUSTERS * 2 {
        return Ok(Vec::new());
    }
    let (model, _) = fit_normal(set, &train, seed)?;
    let mut values = vec![0.0; set.names.len()];
    let mut scratch = (Vec::new(), Vec::new());
    Ok(held
        .into_iter()
        .map(|i| {
            row(set.columns, i, &mut values);
            model.score_value(&values, &mut scratch)
        })
        .collect())
}

/// Row `i` of `columns` into `values`.
fn row(columns: &[Vec<f64>], i: usize, values: &mut [f64]) {
    for (v, c) in values.iter_mut().zip(columns) {
        *v = c[i];
    }
}

/// The model of normal fitted to `rows` of `set`, and those rows' scores
/// (sorted); no threshold yet.
fn fit_normal(set: &TrainingSet, rows: &[usize], seed: u64) -> Result<(Model, Vec<f64>), String> {
    let d = set.names.len();
    let n = rows.len();
    let mut col = Vec::with_capacity(n);
    let features: Vec<ModelFeature> = (0..d)
        .map(|k| {
            col.clear();
            col.extend(rows.iter().map(|&i| set.columns[k][i]));
            let scaling = Scaling::fit(&col, set.dtypes[k] == "count");
            col.retain(|v| !v.is_nan());
            col.sort_by(f64::total_cmp);
            ModelFeature {
                name: set.names[k].clone(),
                dtype: set.dtypes[k].clone(),
                scaling,
                train_median: (!col.is_empty()).then(|| percentile(&col, 0.5)),
            }
        })
        .collect();
    // A regular sample of the rows, in model space, row-major, to fit on.
    let step = n.div_ceil(MAX_FIT_ROWS);
    let fit_rows: Vec<usize> = rows.iter().step_by(step).copied().collect();
    let m = fit_rows.len();
    let mut sample = vec![0.0; m * d];
    for (k, f) in features.iter().enumerate() {
        for (r, &i) in fit_rows.iter().enumerate() {
            sample[r * d + k] = squash(f.scaling.apply(set.columns[k][i]));
        }
    }
    let at = |r: usize| -> &[f64] { &sample[r * d..(r + 1) * d] };

    // PCA: the eigenvectors of the sample's covariance (smartcore's symmetric
    // eigendecomposition), as many as explain VARIANCE of the variance.
    // smartcore's own PCA takes an SVD of the whole sample when it has more
    // rows than columns, which costs minutes for what the d × d covariance
    // gives in a second.
    let mean: Vec<f64> = (0..d)
        .map(|k| (0..m).map(|r| at(r)[k]).sum::<f64>() / m as f64)
        .collect();
    let mut cov = vec![0.0; d * d];
    let mut centred = vec![0.0; d];
    for r in 0..m {
        for ((c, v), mu) in centred.iter_mut().zip(at(r)).zip(&mean) {
            *c = v - mu;
        }
        for (i, &ci) in centred.iter().enumerate() {
            if ci != 0.0 {
                for (acc, cj) in cov[i * d..=i * d + i].iter_mut().zip(&centred) {
                    *acc += ci * cj;
                }
            }
        }
    }
    for i in 0..d {
        for j in 0..=i {
            let v = cov[i * d + j] / m as f64;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    let evd = DenseMatrix::new(d, d, cov, false)
        .map_err(|e| e.to_string())?
        .evd(true)
        .map_err(|e| format!("PCA: {e}"))?;
    let total: f64 = evd.d.iter().map(|v| v.max(0.0)).sum();
    let mut components = Vec::new();
    let mut explained = 0.0;
    for (j, &var) in evd.d.iter().enumerate() {
        if total <= 0.0
            || explained / total >= VARIANCE
            || components.len() >= MAX_COMPONENTS.min(m.saturating_sub(1)).max(1)
        {
            break;
        }
        components.push((0..d).map(|k| *evd.V.get((k, j))).collect::<Vec<f64>>());
        explained += var.max(0.0);
    }
    if components.is_empty() {
        components.push((0..d).map(|k| *evd.V.get((k, 0))).collect());
    }

    // k-means, with centroids recomputed from its assignments.
    let matrix = DenseMatrix::new(m, d, sample.clone(), false).map_err(|e| e.to_string())?;
    let clusters = CLUSTERS.min(m);
    let mut params = KMeansParameters::default()
        .with_k(clusters)
        .with_max_iter(100);
    params.seed = Some(seed);
    let km: KMeans<f64, usize, DenseMatrix<f64>, Vec<usize>> =
        KMeans::fit(&matrix, params).map_err(|e| format!("k-means: {e}"))?;
    let labels = km.predict(&matrix).map_err(|e| format!("k-means: {e}"))?;
    let mut centroids = vec![vec![0.0; d]; clusters];
    let mut sizes = vec![0usize; clusters];
    for (r, &l) in labels.iter().enumerate() {
        sizes[l] += 1;
        for (c, v) in centroids[l].iter_mut().zip(at(r)) {
            *c += v;
        }
    }
    let centroids: Vec<Vec<f64>> = centroids
        .into_iter()
        .zip(&sizes)
        .filter(|(_, s)| **s > 0)
        .map(|(c, &s)| c.into_iter().map(|v| v / s as f64).collect())
        .collect();

    let mut model = Model {
        format: FORMAT.into(),
        version: VERSION,
        smartcore: SMARTCORE.into(),
        catalogue_sha256: catalogue_sha256(
            set.names
                .iter()
                .map(String::as_str)
                .zip(set.dtypes.iter().map(String::as_str)),
        ),
        catalogue_features: d,
        features,
        mean,
        components,
        centroids,
        normalizers: [1.0, 1.0],
        classifier: None,
        prepared: Default::default(),
        false_positive_rate: 0.0,
        threshold: 0.0,
        training: TrainingSummary {
            rows: n,
            fit_rows: m,
            windows: 0,
            entities: 0,
            first_window_us: 0,
            last_window_us: 0,
            seed,
            components: 0,
            variance_explained: if total > 0.0 { explained / total } else { 1.0 },
            clusters: 0,
            score_quantiles: Vec::new(),
            calibration: String::new(),
            held_out_quantiles: Vec::new(),
        },
    };
    model.training.components = model.components.len();
    model.training.clusters = model.centroids.len();
    model.prepare();
    // Normalize each detector by its 90th percentile over the rows.
    let mut values = vec![0.0; d];
    let (mut x, mut acc) = (Vec::new(), Vec::new());
    let parts: Vec<[f64; 2]> = rows
        .iter()
        .map(|&i| {
            row(set.columns, i, &mut values);
            model.parts(&values, &mut x, &mut acc)
        })
        .collect();
    for (j, norm) in model.normalizers.iter_mut().enumerate() {
        let q = percentile(&sorted(parts.iter().map(|p| p[j])), 0.9);
        *norm = if q > 1e-12 { q } else { 1.0 };
    }
    let scores = sorted(parts.iter().map(|p| model.combine(*p)));
    Ok((model, scores))
}

impl Model {
    /// Fits the classifier (smartcore's logistic regression) to `rows` of
    /// `columns` (raw values, as [`TrainingSet::columns`]) and their `labels`
    /// ([`NORMAL`] for unlabelled rows), in this model's space.
    pub fn fit_classifier(
        &mut self,
        columns: &[Vec<f64>],
        rows: &[usize],
        labels: &[String],
    ) -> Result<(), String> {
        use smartcore::linear::logistic_regression::{
            LogisticRegression, LogisticRegressionParameters,
        };
        let d = self.features.len();
        let n = labels.len();
        if columns.len() != d
            || rows.len() != n
            || rows.iter().any(|&i| columns.iter().any(|c| i >= c.len()))
        {
            return Err("labels and feature rows disagree".into());
        }
        let mut classes: Vec<String> = labels.to_vec();
        classes.sort();
        classes.dedup();
        // `normal` first, the labelled kinds after it in name order.
        classes.retain(|c| c != NORMAL);
        classes.insert(0, NORMAL.to_string());
        if classes.len() < 2 {
            return Err("--labels named no window of the training data".into());
        }
        let y: Vec<i32> = labels
            .iter()
            .map(|l| classes.iter().position(|c| c == l).unwrap_or(0) as i32)
            .collect();
        let mut per_class = vec![0usize; classes.len()];
        for &c in &y {
            per_class[c as usize] += 1;
        }
        if per_class[0] == 0 {
            return Err(
                "every training row is labelled: the classifier needs normal rows too".into(),
            );
        }
        let mut x = vec![0.0; n * d];
        let mut values = vec![0.0; d];
        let mut space = Vec::with_capacity(d);
        for (r, &i) in rows.iter().enumerate() {
            row(columns, i, &mut values);
            self.to_model_space(&values, &mut space);
            x[r * d..(r + 1) * d].copy_from_slice(&space);
        }
        let matrix = DenseMatrix::new(n, d, x, false).map_err(|e| e.to_string())?;
        let lr: LogisticRegression<f64, i32, DenseMatrix<f64>, Vec<i32>> = LogisticRegression::fit(
            &matrix,
            &y,
            LogisticRegressionParameters::default().with_alpha(CLASSIFIER_ALPHA),
        )
        .map_err(|e| format!("logistic regression: {e}"))?;
        let (r, _) = lr.coefficients().shape();
        self.classifier = Some(Classifier {
            classes,
            coefficients: (0..r)
                .map(|j| (0..d).map(|k| *lr.coefficients().get((j, k))).collect())
                .collect(),
            intercept: (0..r).map(|j| *lr.intercept().get((j, 0))).collect(),
            rows: per_class,
        });
        Ok(())
    }
}
