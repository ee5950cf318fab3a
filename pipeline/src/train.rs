//! `train`: an anomaly model fitted on the `features` table of a run's output
//! (amoskys_operators::model, docs/MODELS.md).

use std::collections::BTreeSet;
use std::path::PathBuf;

use amoskys_operators::model::{self, FitOptions, HoldOut, Model, TrainingSet};

use crate::error::PipelineError;
use crate::export::{read_catalogue, read_features};

/// What to train on and where the model goes.
pub struct TrainOptions {
    /// The output root of a run (holds `features/` and `feature_metadata.json`).
    pub data: PathBuf,
    pub model: PathBuf,
    /// Windows starting at or after `from` and before `to` (UTC microseconds).
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    pub fit: FitOptions,
    /// What the threshold's held-out rows are held out by.
    pub hold_out: HoldOut,
    /// `entity,from,to,label` lines: windows to learn as kinds of their own.
    pub labels: Option<PathBuf>,
}

/// A labelled stretch of one entity's windows.
struct Label {
    entity: String,
    from_us: i64,
    to_us: i64,
    label: String,
}

/// Reads a labels file: a header `entity,from,to,label`, then one line per
/// stretch (RFC 3339 times; the windows starting at or after `from` and before
/// `to`). `#` starts a comment line.
fn read_labels(path: &std::path::Path) -> Result<Vec<Label>, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        context: format!("read {}", path.display()),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let header = lines.next().map(|(_, l)| l.replace(' ', ""));
    if header.as_deref() != Some("entity,from,to,label") {
        return Err(bad(format!(
            "{}: the first line must be the header entity,from,to,label",
            path.display()
        )));
    }
    let time = |s: &str, at: usize| {
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_micros())
            .map_err(|e| {
                bad(format!(
                    "{}:{}: {s:?} is not an RFC 3339 time: {e}",
                    path.display(),
                    at + 1
                ))
            })
    };
    let mut out = Vec::new();
    for (at, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        let [entity, from, to, label] = f[..] else {
            return Err(bad(format!(
                "{}:{}: expected 4 fields (entity,from,to,label), found {}",
                path.display(),
                at + 1,
                f.len()
            )));
        };
        let label = label.trim().to_string();
        if label.is_empty()
            || label == model::NORMAL
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(format!(
                "{}:{}: label {label:?}: letters, digits, _ and - only, and not {:?} (the class of unlabelled windows)",
                path.display(),
                at + 1,
                model::NORMAL
            )));
        }
        let (from_us, to_us) = (time(from, at)?, time(to, at)?);
        if from_us >= to_us {
            return Err(bad(format!(
                "{}:{}: from must be before to",
                path.display(),
                at + 1
            )));
        }
        // Addresses as the features table writes them (2001:DB8::1 is 2001:db8::1).
        let entity = entity.trim();
        let entity = entity
            .parse::<std::net::IpAddr>()
            .map_or(entity.to_string(), |a| a.to_string());
        out.push(Label {
            entity,
            from_us,
            to_us,
            label,
        });
    }
    Ok(out)
}

fn bad(msg: String) -> PipelineError {
    PipelineError::Train(msg)
}

/// Fits the model and writes its file (through a temporary file and a
/// rename, so a reader never sees half of it).
pub fn train(opts: &TrainOptions) -> Result<Model, PipelineError> {
    let cat = read_catalogue(&opts.data)?;
    let (names, dtypes) = model::build_catalogue();
    if cat.names != names || cat.dtypes != dtypes {
        return Err(bad(format!(
            "{} holds features of another catalogue ({} features; this build computes {}): replay or run the job again with this build, then train",
            opts.data.display(),
            cat.names.len(),
            names.len()
        )));
    }
    let t = read_features(&opts.data, &cat)?;
    let keep: Vec<usize> = (0..t.entity.len())
        .filter(|&i| {
            let w = t.window_us[i];
            opts.from_us.is_none_or(|f| w >= f) && opts.to_us.is_none_or(|e| w < e)
        })
        .collect();
    // Window, then entity: the same rows give the same model whatever the
    // files' order.
    let mut order = keep;
    order.sort_by(|&a, &b| (t.window_us[a], &t.entity[a]).cmp(&(t.window_us[b], &t.entity[b])));
    if order.is_empty() {
        return Err(bad(format!(
            "no feature rows in {} within the time range given",
            opts.data.display()
        )));
    }
    // Labelled windows are kinds of their own: the model of normal is fitted
    // on the others, the classifier on all.
    let labels = opts.labels.as_deref().map(read_labels).transpose()?;
    let label_of = |i: usize| -> String {
        labels
            .iter()
            .flatten()
            .find(|l| {
                l.entity == t.entity[i] && l.from_us <= t.window_us[i] && t.window_us[i] < l.to_us
            })
            .map_or(model::NORMAL.to_string(), |l| l.label.clone())
    };
    let all_labels: Vec<String> = order.iter().map(|&i| label_of(i)).collect();
    let all = order.clone();
    let order: Vec<usize> = all
        .iter()
        .zip(&all_labels)
        .filter(|(_, l)| *l == model::NORMAL)
        .map(|(&i, _)| i)
        .collect();
    let windows: BTreeSet<i64> = order.iter().map(|&i| t.window_us[i]).collect();
    let entities: BTreeSet<&str> = order.iter().map(|&i| t.entity[i].as_str()).collect();
    if order.is_empty() {
        return Err(bad(
            "every row is labelled: nothing is left to learn normal from".into(),
        ));
    }
    let set = TrainingSet {
        names: &cat.names,
        dtypes: &cat.dtypes,
        columns: &t.values,
        folds: opts.hold_out.folds(
            order
                .iter()
                .map(|&i| (t.entity[i].as_str(), t.window_us[i])),
        ),
        hold_out: opts.hold_out,
        rows: order,
        windows: windows.len(),
        entities: entities.len(),
        first_window_us: *windows.first().expect("rows"),
        last_window_us: *windows.last().expect("rows"),
    };
    let mut model = model::fit(&set, opts.fit).map_err(bad)?;
    if labels.is_some() {
        model
            .fit_classifier(&t.values, &all, &all_labels)
            .map_err(bad)?;
    }
    let io = |source| PipelineError::Io {
        context: format!("write {}", opts.model.display()),
        source,
    };
    let tmp = opts.model.with_extension("tmp");
    std::fs::write(&tmp, model.to_json()).map_err(io)?;
    std::fs::rename(&tmp, &opts.model).map_err(io)?;
    Ok(model)
}
