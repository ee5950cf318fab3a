//! Scoring in the dataflow: `[[models]]` in flows.toml (and `replay --model`),
//! each feature row scored by each model once its window has closed, a
//! `scores` row per model and row, and an `anomaly` alert (rule name: the
//! model's name) when a score passes the threshold. A model file that changes
//! on disk is read again and used from the next rows on; one that cannot be
//! read keeps the model in use, and says so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use amoskys_schemas::{Alert, Entity, FeatureRow, ScoreRow, Severity};
use serde::Deserialize;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{Model, build_catalogue};
use crate::alerting::{DetectCounters, alert_id, summary_number as number};
use crate::occurrence::Occurrences;

/// How often each model file is looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// `[[models]]`: a model file to score every feature row with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The alerts' rule name and the `model` column of `scores`.
    pub name: String,
    /// The file `train` wrote.
    pub path: PathBuf,
    /// A threshold of your own instead of the model's.
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default = "medium")]
    pub severity: Severity,
}

fn medium() -> Severity {
    Severity::Medium
}

impl ModelSpec {
    /// Model names are rule names and the `model` column: one each, not
    /// taken by a built-in detection; thresholds given are numbers.
    pub fn check_all(specs: &[ModelSpec]) -> Result<(), String> {
        use crate::detect::{DETECTIONS, LEARNING};
        let mut seen = std::collections::HashSet::new();
        for s in specs {
            if s.name.is_empty() || !seen.insert(s.name.as_str()) {
                return Err(format!(
                    "[[models]] name {:?} is empty or given twice",
                    s.name
                ));
            }
            if DETECTIONS.iter().any(|d| d.name == s.name)
                || LEARNING.iter().any(|l| l.rule.name == s.name)
            {
                return Err(format!(
                    "[[models]] name {:?} is a built-in detection's: name the model otherwise",
                    s.name
                ));
            }
            if s.threshold.is_some_and(|t| !t.is_finite()) {
                return Err(format!("[[models]] {}: threshold must be a number", s.name));
            }
        }
        Ok(())
    }

    /// Reads and checks the model file.
    pub fn load(&self) -> Result<Model, String> {
        let (names, dtypes) = build_catalogue();
        Model::load(&self.path, &names, &dtypes)
            .map_err(|e| format!("[[models]] {}: {e}", self.name))
    }
}

/// Counters of the models.
#[derive(Debug, Default)]
pub struct ModelCounters {
    pub scored: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// A file's identity for change detection: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct Loaded {
    model: Arc<Model>,
    stamp: Stamp,
    checked: Instant,
}

/// The configured models, shared by every worker.
pub struct ModelSet {
    specs: Vec<ModelSpec>,
    loaded: Vec<Mutex<Loaded>>,
    pub counters: Arc<ModelCounters>,
}

impl ModelSet {
    /// Loads every model; the first that cannot be used is the error.
    pub fn load(specs: &[ModelSpec], counters: Arc<ModelCounters>) -> Result<ModelSet, String> {
        let mut loaded = Vec::with_capacity(specs.len());
        for s in specs {
            let st = stamp(&s.path);
            loaded.push(Mutex::new(Loaded {
                model: Arc::new(s.load()?),
                stamp: st,
                checked: Instant::now(),
            }));
        }
        Ok(ModelSet {
            specs: specs.to_vec(),
            loaded,
            counters,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Model `i` as it is now: read again when its file changed. The file
    /// is read without holding the lock, so other workers keep scoring with
    /// the model in use meanwhile; one worker reads it (the first to see the
    /// check due).
    fn current(&self, i: usize) -> Arc<Model> {
        let lock = || self.loaded[i].lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut l = lock();
            if l.checked.elapsed() < RELOAD_CHECK {
                return l.model.clone();
            }
            l.checked = Instant::now();
            let now = stamp(&self.specs[i].path);
            if now == l.stamp {
                return l.model.clone();
            }
            l.stamp = now;
        }
        match self.specs[i].load() {
            Ok(m) => {
                let m = Arc::new(m);
                lock().model = m.clone();
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %self.specs[i].name, "model file read again");
                m
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}; the model in use is kept");
                lock().model.clone()
            }
        }
    }
}

/// Scores every row with every model: the rows themselves (passed through,
/// not copied: a feature row is a few KiB and a second reader of the stream
/// would clone every one), their scores, and the alerts of those above a
/// threshold come out as three streams.
pub trait ScoreModels<'scope> {
    #[allow(clippy::type_complexity)]
    fn score_models(
        self,
        models: Arc<ModelSet>,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<ScoreRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    );
}

impl<'scope> ScoreModels<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn score_models(
        self,
        models: Arc<ModelSet>,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<ScoreRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    ) {
        let mut builder = OperatorBuilder::new("ScoreModels".to_owned(), self.scope());
        // Rows of an entity are on one worker, in window order.
        let mut input = builder.new_input(self, Pipeline);
        let (rows_out, passed) = builder.new_output();
        let mut rows_out = OutputBuilder::from(rows_out);
        let (scores_out, scores) = builder.new_output();
        let (alerts_out, alerts) = builder.new_output();
        let mut scores_out = OutputBuilder::from(scores_out);
        let mut alerts_out = OutputBuilder::from(alerts_out);
        let names: Vec<Arc<str>> = models
            .specs
            .iter()
            .map(|s| s.name.as_str().into())
            .collect();
        builder.build(move |_| {
            let mut firing: Occurrences<(usize, Entity)> = Occurrences::new(1);
            // Keyed by the class's name: a reloaded model may number its
            // classes otherwise.
            let mut classed: Occurrences<(usize, String, Entity)> = Occurrences::new(1);
            let mut scratch = (Vec::new(), Vec::new());
            move |_frontiers| {
                let mut rows_h = rows_out.activate();
                let mut scores_h = scores_out.activate();
                let mut alerts_h = alerts_out.activate();
                input.for_each(|cap, data| {
                    let mut rows = Vec::with_capacity(data.len() * names.len());
                    let mut raised = Vec::new();
                    for (i, name) in names.iter().enumerate() {
                        let model = models.current(i);
                        let spec = &models.specs[i];
                        let threshold = spec.threshold.unwrap_or(model.threshold);
                        for r in data.iter() {
                            let score = model.score_value(&r.values, &mut scratch);
                            // Why, only for the rows that raise an alert.
                            if score > threshold && firing.starts((i, r.entity.clone()), r.window) {
                                let s = model.score(&r.values);
                                raised.push(anomaly(spec, &model, r, &s, threshold));
                            }
                            if let Some((class, p)) = model.classify_model_space(&scratch.0)
                                && class > 0
                                && let Some(c) = &model.classifier
                                && classed.starts(
                                    (i, c.classes[class].clone(), r.entity.clone()),
                                    r.window,
                                )
                            {
                                let s = model.score(&r.values);
                                raised.push(classified(spec, &model, r, &s, class, p));
                            }
                            rows.push(ScoreRow {
                                entity: r.entity.clone(),
                                window: r.window,
                                model: name.clone(),
                                score,
                                threshold,
                            });
                        }
                    }
                    models
                        .counters
                        .scored
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    scores_h.session(&cap).give_container(&mut rows);
                    counters.emit(&mut raised, |v| alerts_h.session(&cap).give_container(v));
                    rows_h.session(&cap).give_container(data);
                });
            }
        });
        (passed, scores, alerts)
    }
}

/// The alert of a row above the threshold: the score, the threshold, and each
/// feature that explains it with its value and its training median.
fn anomaly(
    spec: &ModelSpec,
    model: &Model,
    row: &FeatureRow,
    s: &super::Score,
    threshold: f64,
) -> Alert {
    let mut evidence = vec![
        ("score".to_string(), s.score),
        ("threshold".to_string(), threshold),
    ];
    let mut why = Vec::new();
    for &(k, _) in &s.top {
        let f = &model.features[k];
        let v = row.values.get(k).copied().unwrap_or(f64::NAN);
        let median = f.train_median.unwrap_or(f64::NAN);
        if !v.is_nan() {
            evidence.push((f.name.clone(), v));
        }
        if !median.is_nan() {
            evidence.push((format!("{}.train_median", f.name), median));
        }
        why.push(format!(
            "{} {} (usually {})",
            f.name,
            number(v),
            number(median)
        ));
    }
    Alert {
        id: alert_id(&spec.name, &row.entity, row.window),
        rule: spec.name.clone(),
        severity: spec.severity,
        entity: row.entity.clone(),
        window: row.window,
        sources: vec!["model".to_string()],
        summary: format!(
            "{} is unlike the training windows of model {} (score {:.2}, threshold {:.2}): {}",
            row.entity,
            spec.name,
            s.score,
            threshold,
            why.join(", ")
        ),
        evidence,
    }
}

/// The alert of a row the classifier puts in a labelled class: named
/// `<model>.<class>`, with the probability and the features that explain the
/// row's anomaly score.
fn classified(
    spec: &ModelSpec,
    model: &Model,
    row: &FeatureRow,
    s: &super::Score,
    class: usize,
    p: f64,
) -> Alert {
    let name = model
        .classifier
        .as_ref()
        .map_or("labelled", |c| c.classes[class].as_str());
    let rule = format!("{}.{name}", spec.name);
    let mut evidence = vec![
        ("probability".to_string(), p),
        ("score".to_string(), s.score),
    ];
    for &(k, _) in &s.top {
        let v = row.values.get(k).copied().unwrap_or(f64::NAN);
        if !v.is_nan() {
            evidence.push((model.features[k].name.clone(), v));
        }
    }
    Alert {
        id: alert_id(&rule, &row.entity, row.window),
        summary: format!(
            "{} looks like {name} to model {} (probability {p:.2})",
            row.entity, spec.name
        ),
        rule,
        severity: spec.severity,
        entity: row.entity.clone(),
        window: row.window,
        sources: vec!["model".to_string()],
        evidence,
    }
}
