//! `train`: an anomaly model fitted on the `features` table of a run's output
//! (amoskys_operators::model, docs/MODELS.md).

use std::collections::BTreeSet;
use std::path::PathBuf;

use amoskys_operators::model::{self, FitOptions, Model, TrainingSet};

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
    let windows: BTreeSet<i64> = order.iter().map(|&i| t.window_us[i]).collect();
    let entities: BTreeSet<&str> = order.iter().map(|&i| t.entity[i].as_str()).collect();
    let set = TrainingSet {
        names: &cat.names,
        dtypes: &cat.dtypes,
        columns: t
            .values
            .iter()
            .map(|col| order.iter().map(|&i| col[i]).collect())
            .collect(),
        windows: windows.len(),
        entities: entities.len(),
        first_window_us: *windows.first().expect("rows"),
        last_window_us: *windows.last().expect("rows"),
    };
    let model = model::fit(&set, opts.fit).map_err(bad)?;
    let io = |source| PipelineError::Io {
        context: format!("write {}", opts.model.display()),
        source,
    };
    let tmp = opts.model.with_extension("tmp");
    std::fs::write(&tmp, model.to_json()).map_err(io)?;
    std::fs::rename(&tmp, &opts.model).map_err(io)?;
    Ok(model)
}
