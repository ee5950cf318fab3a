//! Fitting a model: the model of normal (smartcore's PCA and k-means) and,
//! with labels, the classifier (smartcore's logistic regression).

use smartcore::cluster::kmeans::{KMeans, KMeansParameters};
use smartcore::decomposition::pca::{PCA, PCAParameters};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::*;

/// What a model is fitted on: the features table's columns (NaN for null)
/// over the training rows.
pub struct TrainingSet<'a> {
    pub names: &'a [String],
    pub dtypes: &'a [String],
    pub columns: Vec<Vec<f64>>,
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

/// Fits a model to `set` (smartcore's PCA and k-means, seeded).
pub fn fit(set: &TrainingSet, opts: FitOptions) -> Result<Model, String> {
    let d = set.names.len();
    let n = set.columns.first().map_or(0, Vec::len);
    if d == 0 || set.columns.len() != d || set.dtypes.len() != d {
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
    let mut features = Vec::with_capacity(d);
    for k in 0..d {
        let col = &set.columns[k];
        let present = sorted(col.iter().copied().filter(|v| !v.is_nan()));
        features.push(ModelFeature {
            name: set.names[k].clone(),
            dtype: set.dtypes[k].clone(),
            scaling: Scaling::fit(col, set.dtypes[k] == "count"),
            train_median: (!present.is_empty()).then(|| percentile(&present, 0.5)),
        });
    }
    // Every training row in model space, row-major.
    let mut x = vec![0.0; n * d];
    for (k, f) in features.iter().enumerate() {
        for (i, v) in set.columns[k].iter().enumerate() {
            x[i * d + k] = squash(f.scaling.apply(*v));
        }
    }
    // A regular sample to fit on.
    let step = n.div_ceil(MAX_FIT_ROWS);
    let fit_rows: Vec<usize> = (0..n).step_by(step).collect();
    let m = fit_rows.len();
    let mut sample = Vec::with_capacity(m * d);
    for &i in &fit_rows {
        sample.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    let matrix = DenseMatrix::new(m, d, sample.clone(), false).map_err(|e| e.to_string())?;

    // PCA: as many components as explain VARIANCE of the variance.
    let n_components = d.min(MAX_COMPONENTS).min(m.saturating_sub(1)).max(1);
    let pca = PCA::fit(
        &matrix,
        PCAParameters::default().with_n_components(n_components),
    )
    .map_err(|e| format!("PCA: {e}"))?;
    let mean: Vec<f64> = (0..d)
        .map(|k| fit_rows.iter().map(|&i| x[i * d + k]).sum::<f64>() / m as f64)
        .collect();
    let projection = pca.components();
    let mut components: Vec<Vec<f64>> = (0..n_components)
        .map(|j| {
            (0..d)
                .map(|k| *smartcore::linalg::basic::arrays::Array::get(projection, (k, j)))
                .collect()
        })
        .collect();
    let total: f64 = (0..d)
        .map(|k| {
            fit_rows
                .iter()
                .map(|&i| (x[i * d + k] - mean[k]).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / m as f64;
    let mut kept = 0;
    let mut explained = 0.0;
    for c in &components {
        if total <= 0.0 || explained / total >= VARIANCE {
            break;
        }
        let var = fit_rows
            .iter()
            .map(|&i| {
                let z: f64 = (0..d).map(|k| (x[i * d + k] - mean[k]) * c[k]).sum();
                z * z
            })
            .sum::<f64>()
            / m as f64;
        explained += var;
        kept += 1;
    }
    components.truncate(kept.max(1));

    // k-means, with centroids recomputed from its assignments.
    let clusters = CLUSTERS.min(m);
    let mut params = KMeansParameters::default()
        .with_k(clusters)
        .with_max_iter(100);
    params.seed = Some(opts.seed);
    let km: KMeans<f64, usize, DenseMatrix<f64>, Vec<usize>> =
        KMeans::fit(&matrix, params).map_err(|e| format!("k-means: {e}"))?;
    let labels = km.predict(&matrix).map_err(|e| format!("k-means: {e}"))?;
    let mut centroids = vec![vec![0.0; d]; clusters];
    let mut sizes = vec![0usize; clusters];
    for (r, &l) in labels.iter().enumerate() {
        sizes[l] += 1;
        for k in 0..d {
            centroids[l][k] += sample[r * d + k];
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
        fixed: Vec::new(),
        false_positive_rate: opts.false_positive_rate,
        threshold: 0.0,
        training: TrainingSummary {
            rows: n,
            fit_rows: m,
            windows: set.windows,
            entities: set.entities,
            first_window_us: set.first_window_us,
            last_window_us: set.last_window_us,
            seed: opts.seed,
            components: 0,
            variance_explained: if total > 0.0 { explained / total } else { 1.0 },
            clusters: 0,
            score_quantiles: Vec::new(),
        },
    };
    model.training.components = model.components.len();
    model.training.clusters = model.centroids.len();
    // Normalize each detector by its training 90th percentile, then set the
    // threshold over every training row's score.
    let parts: Vec<[f64; 2]> = (0..n)
        .map(|i| model.parts(&x[i * d..(i + 1) * d], &mut Vec::new()))
        .collect();
    for (j, norm) in model.normalizers.iter_mut().enumerate() {
        let q = percentile(&sorted(parts.iter().map(|p| p[j])), 0.9);
        *norm = if q > 1e-12 { q } else { 1.0 };
    }
    let scores = sorted(parts.iter().map(|p| model.combine(*p)));
    model.threshold = percentile(&scores, 1.0 - opts.false_positive_rate);
    model.training.score_quantiles = [0.5, 0.9, 0.99, 0.999, 1.0]
        .iter()
        .map(|&q| (q, percentile(&scores, q)))
        .collect();
    model.prepare();
    Ok(model)
}

impl Model {
    /// Fits the classifier (smartcore's logistic regression) to `columns`
    /// (raw values, as [`TrainingSet::columns`]) and their `labels`
    /// ([`NORMAL`] for unlabelled rows), in this model's space.
    pub fn fit_classifier(
        &mut self,
        columns: &[Vec<f64>],
        labels: &[String],
    ) -> Result<(), String> {
        use smartcore::linear::logistic_regression::{
            LogisticRegression, LogisticRegressionParameters,
        };
        let d = self.features.len();
        let n = labels.len();
        if columns.len() != d || columns.iter().any(|c| c.len() != n) {
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
        let mut rows = vec![0usize; classes.len()];
        for &c in &y {
            rows[c as usize] += 1;
        }
        if rows[0] == 0 {
            return Err(
                "every training row is labelled: the classifier needs normal rows too".into(),
            );
        }
        let mut x = vec![0.0; n * d];
        let mut values = vec![0.0; d];
        for i in 0..n {
            for k in 0..d {
                values[k] = columns[k][i];
            }
            x[i * d..(i + 1) * d].copy_from_slice(&self.model_space(&values));
        }
        let matrix = DenseMatrix::new(n, d, x, false).map_err(|e| e.to_string())?;
        let lr: LogisticRegression<f64, i32, DenseMatrix<f64>, Vec<i32>> = LogisticRegression::fit(
            &matrix,
            &y,
            LogisticRegressionParameters::default().with_alpha(CLASSIFIER_ALPHA),
        )
        .map_err(|e| format!("logistic regression: {e}"))?;
        use smartcore::linalg::basic::arrays::Array;
        let (r, _) = lr.coefficients().shape();
        self.classifier = Some(Classifier {
            classes,
            coefficients: (0..r)
                .map(|j| (0..d).map(|k| *lr.coefficients().get((j, k))).collect())
                .collect(),
            intercept: (0..r).map(|j| *lr.intercept().get((j, 0))).collect(),
            rows,
        });
        Ok(())
    }
}
