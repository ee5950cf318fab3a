//! What a run writes: the Parquet tables (a sink thread each), the alert
//! webhook, `feature_metadata.json`, and the run id that names the files.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use amoskys_schemas::{
    Alert, EventRow, FeatureDef, FeatureRow, FeatureStats, FlowRecord, ScoreRow, metadata_json,
    metadata_json_with_stats,
};
use amoskys_sinks::parquet::{
    AlertTable, EventTable, FeatureTable, FlowTable, Recent, ScoreTable, SinkSummary, TableRows,
};

use crate::bridge::{
    Progress, SinkThread, Webhook, WebhookReport, spawn_live_table_sink, spawn_webhook,
};
use crate::config::Config;
use crate::durable::Logs;
use crate::error::PipelineError;

/// Names this run's files: start time (UTC, milliseconds) and process id.
pub fn run_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
    .replace('.', "")
}

/// Writes `DIR/feature_metadata.json` (through a temporary file and a rename):
/// the catalogue, and — once a run has ended — each feature's statistics over it.
pub fn write_feature_metadata(
    out: &Path,
    defs: &[FeatureDef],
    stats: Option<&FeatureStats>,
) -> Result<(), PipelineError> {
    let io = |context: String| move |source| PipelineError::Io { context, source };
    std::fs::create_dir_all(out).map_err(io(format!("create {}", out.display())))?;
    let doc = match stats {
        Some(st) => metadata_json_with_stats(defs, st),
        None => metadata_json(defs),
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let tmp = out.join(".feature_metadata.json.tmp");
    let dest = out.join("feature_metadata.json");
    std::fs::write(&tmp, text + "\n").map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &dest).map_err(io(format!("rename to {}", dest.display())))?;
    Ok(())
}

/// How the outputs of one run are set up.
pub struct OutputPlan<'a> {
    pub cfg: &'a Config,
    pub dir: PathBuf,
    pub defs: Vec<FeatureDef>,
    /// Whether an `events` table is written (some source carries records).
    pub events: bool,
    /// Close files after the configured roll interval (the long-running job).
    pub roll: bool,
    /// Keep the rows of unfinished files for a Flight endpoint.
    pub recent: bool,
    /// Names the files (default: [`run_id`]). A replay names them after its
    /// inputs, replaces the files of an earlier replay of the same inputs,
    /// and publishes its files only when it has finished.
    pub replay_id: Option<String>,
    /// The sources' logs: the `events` table and the windowed tables commit
    /// their files with the positions of the logs they hold.
    pub logs: Option<&'a Logs>,
    /// Workers of the dataflow (whose progress the windowed tables follow).
    pub workers: usize,
}

/// A replay's hold on its output: `DIR/_replay-<id>.incomplete`, locked
/// (`File::try_lock`, flock on Linux) while the replay runs so that a second replay of the same input
/// into the same directory is refused, and removed once its files are in
/// place. Present without a lock: a replay that was stopped, whose output is
/// not whole. The kernel drops the lock when the process dies.
struct ReplayLock {
    id: String,
    path: PathBuf,
    _file: std::fs::File,
}

impl ReplayLock {
    fn take(dir: &Path, id: &str) -> Result<ReplayLock, PipelineError> {
        let path = dir.join(format!("_replay-{id}.incomplete"));
        let io = |source| PipelineError::Io {
            context: format!("open {}", path.display()),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if file.try_lock().is_err() {
            return Err(PipelineError::Dataflow(format!(
                "another replay of the same input is writing to {} ({} is locked)",
                dir.display(),
                path.display()
            )));
        }
        Ok(ReplayLock {
            id: id.to_string(),
            path,
            _file: file,
        })
    }

    /// Moves the replay's files into place, then removes the files of an
    /// earlier replay of the same input that they did not replace, then the
    /// marker. Returns how many earlier files there were.
    fn publish(self, dir: &Path, files: &[(PathBuf, PathBuf)]) -> Result<usize, PipelineError> {
        let before = amoskys_sinks::parquet::run_files(dir, &self.id)?;
        let earlier = before
            .iter()
            .filter(|f| !amoskys_sinks::parquet::is_scratch(f))
            .count();
        amoskys_sinks::parquet::publish(files)?;
        let now: std::collections::HashSet<&PathBuf> = files.iter().map(|(_, d)| d).collect();
        for f in before {
            if !amoskys_sinks::parquet::is_scratch(&f) && !now.contains(&f) {
                std::fs::remove_file(&f).map_err(|source| PipelineError::Io {
                    context: format!("remove {}", f.display()),
                    source,
                })?;
            }
        }
        std::fs::remove_file(&self.path).map_err(|source| PipelineError::Io {
            context: format!("remove {}", self.path.display()),
            source,
        })?;
        Ok(earlier)
    }
}

/// The long-running job's hold on its output directory: `DIR/_job.lock`,
/// locked while the job runs, so that a second job writing to the same
/// directory (whose commits and logs would mix with this one's) is refused.
/// Taking it removes what earlier, stopped runs of the job left unfinished.
pub struct JobLock {
    _file: std::fs::File,
}

impl JobLock {
    pub fn take(dir: &Path) -> Result<JobLock, PipelineError> {
        let io = |context: String| move |source| PipelineError::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join("_job.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        if file.try_lock().is_err() {
            return Err(PipelineError::Dataflow(format!(
                "another job is writing to {} ({} is locked)",
                dir.display(),
                path.display()
            )));
        }
        Ok(JobLock { _file: file })
    }

    /// Removes the scratch files of stopped runs of the job (call after the
    /// `events` table's pending commit, if any, is completed); returns how many.
    pub fn clean(&self, dir: &Path) -> Result<usize, PipelineError> {
        let files = amoskys_sinks::parquet::job_scratch_files(dir)?;
        for f in &files {
            std::fs::remove_file(f).map_err(|source| PipelineError::Io {
                context: format!("remove {}", f.display()),
                source,
            })?;
        }
        Ok(files.len())
    }
}

/// Where the dataflow hands its rows; cloned into every worker.
#[derive(Clone)]
pub struct Senders {
    pub events: Option<SyncSender<Vec<EventRow>>>,
    /// Events handed to the events sink's channel (how much the dataflow holds).
    pub events_delivered: Arc<AtomicU64>,
    pub flows: SyncSender<Vec<FlowRecord>>,
    pub features: SyncSender<Vec<FeatureRow>>,
    pub alerts: SyncSender<Vec<Alert>>,
    /// Anomaly scores, when models are configured.
    pub scores: Option<SyncSender<Vec<ScoreRow>>>,
    pub webhook: Option<SyncSender<Vec<Alert>>>,
    /// How far each windowed table's rows have reached its channel, when its
    /// commits are cut at the windows' frontier.
    pub progress: TableProgress,
}

/// The progress of the windowed tables' streams ([`crate::bridge::Progress`]).
#[derive(Clone, Default)]
pub struct TableProgress {
    pub features: Option<Arc<Progress>>,
    pub alerts: Option<Arc<Progress>>,
    pub scores: Option<Arc<Progress>>,
    /// The alerts at the webhook's channel.
    pub webhook: Option<Arc<Progress>>,
}

/// The running sinks.
pub struct Outputs {
    dir: PathBuf,
    replay: Option<ReplayLock>,
    defs: Vec<FeatureDef>,
    events: Option<SinkThread>,
    flows: SinkThread,
    features: SinkThread,
    alerts: SinkThread,
    scores: Option<SinkThread>,
    pub webhook: Option<Webhook>,
    stats: Arc<Mutex<FeatureStats>>,
    /// The tables' unfinished rows, for a Flight endpoint.
    pub recent: Vec<Arc<Recent>>,
}

/// What the sinks wrote.
pub struct Written {
    /// Files of an earlier replay of the same input that this one replaced.
    pub replaced: usize,
    pub events: Option<SinkSummary>,
    pub flows: SinkSummary,
    pub features: SinkSummary,
    pub alerts: SinkSummary,
    pub scores: Option<SinkSummary>,
    pub webhook: Option<WebhookReport>,
}

impl Outputs {
    /// Writes the feature metadata and starts a sink thread per table.
    pub fn start(plan: OutputPlan<'_>) -> Result<(Outputs, Senders), PipelineError> {
        write_feature_metadata(&plan.dir, &plan.defs, None)?;
        let mut settings = plan.cfg.sinks.parquet.settings(
            plan.dir.clone(),
            plan.replay_id.clone().unwrap_or_else(run_id),
        )?;
        let mut replay = None;
        if let Some(id) = &plan.replay_id {
            replay = Some(ReplayLock::take(&plan.dir, id)?);
            // What a stopped replay of the same input left unfinished goes;
            // its published files stay until this one's replace them.
            for f in amoskys_sinks::parquet::run_files(&plan.dir, id)? {
                if amoskys_sinks::parquet::is_scratch(&f) {
                    std::fs::remove_file(&f).map_err(|source| PipelineError::Io {
                        context: format!("remove {}", f.display()),
                        source,
                    })?;
                }
            }
            settings.publish_at_end = true;
        }
        if plan.roll {
            settings.roll_after = Some(plan.cfg.sinks.parquet.roll_interval.0.0);
        }
        let mut recent = Vec::new();
        let mut keep = |t: &dyn Named| {
            plan.recent.then(|| {
                let r = Arc::new(Recent::new(t.table_name(), t.table_schema()));
                recent.push(r.clone());
                r
            })
        };
        let (events_tx, events) = match plan.events {
            true => {
                let r = keep(&EventTable);
                let mut es = settings.clone();
                es.commit = plan.logs.map(|l| l.spec("events", None));
                let (tx, h) = spawn_live_table_sink(EventTable, es, r)?;
                (Some(tx), Some(h))
            }
            false => (None, None),
        };
        let r = keep(&FlowTable);
        let (flows_tx, flows) = spawn_live_table_sink(FlowTable, settings.clone(), r)?;
        // With the sources' logs, each windowed table commits at a cut of the
        // windows' frontier, which its stream's progress gives.
        let mut progress = TableProgress::default();
        // The webhook's spooling is part of the alerts' commits: the `alerts`
        // table's cut never passes what the webhook has spooled, so the
        // alerts a restart does not send again were sent.
        let spool = match (plan.logs, &plan.cfg.sinks.webhook) {
            (Some(_), Some(_)) => {
                let p = Arc::new(Progress::new(plan.workers));
                progress.webhook = Some(p.clone());
                Some(amoskys_sinks::webhook::SpoolProgress {
                    frontier: Arc::new(move || p.frontier()),
                    spooled: Arc::default(),
                })
            }
            _ => None,
        };
        let windowed = |table: &'static str, slot: &mut Option<Arc<Progress>>| {
            let mut s = settings.clone();
            if let Some(l) = plan.logs {
                let p = Arc::new(Progress::new(plan.workers));
                *slot = Some(p.clone());
                let spooled = spool
                    .as_ref()
                    .filter(|_| table == "alerts")
                    .map(|sp| sp.spooled.clone());
                let frontier: amoskys_sinks::parquet::commit::Frontier = match spooled {
                    Some(sp) => Arc::new(move || {
                        p.frontier()
                            .min(sp.load(std::sync::atomic::Ordering::Acquire))
                    }),
                    None => Arc::new(move || p.frontier()),
                };
                s.commit = Some(l.spec(table, Some(frontier)));
            }
            s
        };
        let feature_table = FeatureTable::new(plan.defs.clone());
        let stats = feature_table.stats();
        let r = keep(&feature_table);
        let fs = windowed("features", &mut progress.features);
        let (features_tx, features) = spawn_live_table_sink(feature_table, fs, r)?;
        let (scores_tx, scores) = match plan.cfg.models.is_empty() {
            true => (None, None),
            false => {
                let r = keep(&ScoreTable);
                let ss = windowed("scores", &mut progress.scores);
                let (tx, h) = spawn_live_table_sink(ScoreTable, ss, r)?;
                (Some(tx), Some(h))
            }
        };
        let r = keep(&AlertTable);
        let als = windowed("alerts", &mut progress.alerts);
        let (alerts_tx, alerts) = spawn_live_table_sink(AlertTable, als, r)?;
        if let Some(l) = plan.logs {
            let tables: Vec<&str> = [
                Some("features"),
                Some("alerts"),
                progress.scores.as_ref().map(|_| "scores"),
            ]
            .into_iter()
            .flatten()
            .collect();
            l.state.expect(&tables);
        }
        // Alerts of windows the `alerts` table committed were spooled: those
        // a restart raises again, for context, are not sent again.
        let cut = plan
            .logs
            .and_then(|l| l.windowed.get("alerts"))
            .and_then(|p| p.get(amoskys_sinks::parquet::commit::WINDOW_CUT).copied());
        let webhook = spawn_webhook(plan.cfg, &plan.dir, cut, spool)?;
        let senders = Senders {
            events: events_tx,
            events_delivered: Arc::default(),
            flows: flows_tx,
            features: features_tx,
            alerts: alerts_tx,
            scores: scores_tx,
            webhook: webhook.as_ref().map(|w| w.tx.clone()),
            progress,
        };
        Ok((
            Outputs {
                dir: plan.dir,
                replay,
                defs: plan.defs,
                events,
                flows,
                features,
                alerts,
                scores,
                webhook,
                stats,
                recent,
            },
            senders,
        ))
    }

    /// Waits for every sink to close its files (the dataflow must be done),
    /// then writes the feature metadata with the run's statistics.
    pub fn finish(self) -> Result<Written, PipelineError> {
        let joined = |h: SinkThread, what: &str| {
            h.join()
                .map_err(|_| PipelineError::Dataflow(format!("the {what} sink panicked")))?
                .map_err(PipelineError::from)
        };
        let events = self.events.map(|h| joined(h, "events")).transpose()?;
        let flows = joined(self.flows, "flows")?;
        let features = joined(self.features, "features")?;
        let alerts = joined(self.alerts, "alerts")?;
        let scores = self.scores.map(|h| joined(h, "scores")).transpose()?;
        let webhook = self.webhook.map(Webhook::finish).transpose()?;
        if let Ok(st) = self.stats.lock() {
            write_feature_metadata(&self.dir, &self.defs, Some(&st))?;
        }
        let mut replaced = 0;
        if let Some(lock) = self.replay {
            let files: Vec<(PathBuf, PathBuf)> = [Some(&flows), Some(&features), Some(&alerts)]
                .into_iter()
                .chain([events.as_ref(), scores.as_ref()])
                .flatten()
                .flat_map(|s| s.unpublished.iter().cloned())
                .collect();
            replaced = lock.publish(&self.dir, &files)?;
        }
        Ok(Written {
            replaced,
            events,
            flows,
            features,
            alerts,
            scores,
            webhook,
        })
    }
}

/// A table's name and schema, whatever its rows.
trait Named {
    fn table_name(&self) -> &'static str;
    fn table_schema(&self) -> arrow_schema::SchemaRef;
}

impl<T: TableRows> Named for T {
    fn table_name(&self) -> &'static str {
        self.name()
    }
    fn table_schema(&self) -> arrow_schema::SchemaRef {
        self.schema()
    }
}
