//! The `amoskys-pipeline` command: parses the command line (cli.rs) and runs
//! the subcommand; each subcommand's work is in the library.

mod cli;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command};

use amoskys_pipeline::config::Config;
use amoskys_pipeline::generate::{GenerateOptions, generate_capture};
use amoskys_pipeline::replay::{ReplayOptions, replay};

// The dataflow allocates and frees many small maps per host and window; mimalloc
// does that with far fewer page faults and less time than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal: a log file or journal gets text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let result = match (cli.command, cli.config) {
        (Some(cmd), _) => run(cmd),
        (None, Some(config)) => run_long(
            Config::load(&config),
            &config,
            cli.workers.map(usize::from),
            cli.metrics_listen,
        ),
        (None, None) if cli.default => {
            let name = std::path::Path::new("<built-in default: examples/default.toml>");
            run_long(
                Config::parse(DEFAULT_CONFIG, name),
                name,
                cli.workers.map(usize::from),
                cli.metrics_listen,
            )
        }
        (None, None) => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            Ok(ExitCode::from(2))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause only where its text is not
/// already said (many errors repeat their cause in their own message).
fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

/// `sql`: runs the queries in order; stops at the first that fails, with its
/// message and exit code 1.
fn sql(
    data: &std::path::Path,
    query: Option<String>,
    format: amoskys_query::sql::Format,
    output: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use amoskys_query::sql::{Format, run, split_queries};
    let queries = match query {
        Some(q) => split_queries(&q),
        None => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("read queries from standard input")?;
            split_queries(&text)
        }
    };
    if queries.is_empty() {
        eprintln!("error: no query: give one as an argument or on standard input");
        return Ok(ExitCode::from(2));
    }
    if format == Format::Parquet && queries.len() > 1 {
        eprintln!(
            "error: parquet output holds one query's result; {} were given",
            queries.len()
        );
        return Ok(ExitCode::from(2));
    }
    if !data.is_dir() {
        eprintln!("error: {}: not a directory", data.display());
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the query runtime")?;
    let mut out: Box<dyn Write + Send> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let code = rt.block_on(async {
        let ctx = match amoskys_query::catalog::open(data).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        let tables = [
            ("flows", amoskys_schemas::flows_schema()),
            ("events", amoskys_schemas::events_schema()),
            (
                "features",
                amoskys_schemas::features_schema(&amoskys_operators::features::defs()),
            ),
            ("alerts", amoskys_schemas::alerts_schema()),
        ];
        for (name, schema) in tables {
            if let Err(e) = amoskys_query::catalog::register_empty(&ctx, name, schema) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
        let open = amoskys_query::catalog::unfinished(data);
        if !open.is_empty() {
            let list: Vec<String> = open.iter().map(|(t, n)| format!("{t} ({n})")).collect();
            eprintln!(
                "note: a running job is still writing files of {}: their rows appear here once \
                 each file is finished (every roll_interval, and at its stop); its Flight \
                 endpoint ([sinks.flight], see docs/QUERY.md) serves them now",
                list.join(", ")
            );
        }
        for q in &queries {
            if let Err(e) = run(&ctx, q, format, &mut *out).await {
                let _ = out.flush();
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
        ExitCode::SUCCESS
    });
    out.flush().context("write the results")?;
    Ok(code)
}

/// Completes on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `serve`: the Flight endpoint until SIGINT or SIGTERM.
fn serve(s: amoskys_query::flight::FlightSettings) -> anyhow::Result<ExitCode> {
    if !s.data.is_dir() {
        eprintln!("error: {}: not a directory", s.data.display());
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the Flight runtime")?;
    let scheme = if s.tls.is_some() { "grpc+tls" } else { "grpc" };
    eprintln!(
        "serving {} over Arrow Flight on {scheme}://{}{}",
        s.data.display(),
        s.listen,
        if s.tokens.is_empty() {
            ""
        } else {
            " (bearer token required)"
        }
    );
    match rt.block_on(amoskys_query::flight::serve(s, interrupted())) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The configuration `--default` runs.
const DEFAULT_CONFIG: &str = include_str!("../../examples/default.toml");

/// The long-running job: until SIGINT or SIGTERM.
fn run_long(
    cfg: Result<Config, amoskys_pipeline::config::ConfigError>,
    config: &std::path::Path,
    workers: Option<usize>,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let cfg = cfg?;
    if cfg.sources.is_empty() {
        anyhow::bail!(
            "{}: no sources: add a [[sources.syslog]], [[sources.mqtt]], [[sources.snmp]] or [[sources.pcap]] section (see examples/flows.toml), or use `replay` for captures",
            config.display()
        );
    }
    if let Some(addr) = metrics_listen.or(cfg.runtime.metrics_listen) {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serve metrics on {addr}"))?;
        eprintln!("metrics: http://{addr}/metrics");
    }
    let workers = workers.unwrap_or(cfg.runtime.workers.0 as usize);
    let out = cfg.sinks.parquet.path.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(interrupted());
            }
            eprintln!("stopping: closing sources, flushing sinks");
            let _ = stop_tx.send(true);
        })?;
    let report = amoskys_pipeline::run::run_job(cfg, workers, stop, |ready| {
        for (name, addr) in ready {
            eprintln!("listening: {name} {addr}");
        }
        eprintln!("writing to {}", out.display());
    })?;
    eprintln!(
        "stopped: {} events ({} behind the watermark), {} packets ({} late), {} flows, {} feature rows, {} alerts",
        report.events,
        report.late,
        report.packets,
        report.late_packets,
        report.flows,
        report.feature_rows,
        report.alerts
    );
    for s in &report.sources {
        let counts: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("  {} ({}): {}", s.name, s.kind, counts.join(" "));
    }
    if let Some(w) = &report.webhook {
        eprintln!(
            "  webhook: spooled={} delivered={} requests={} retries={} rejected={} repeated={}",
            w.spooled, w.delivered, w.requests, w.retries, w.rejected, w.repeated
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Replay {
            paths,
            out,
            config,
            workers,
            no_progress,
            summary_json,
            features,
            syslog,
            model,
        } => {
            let mut config = load(config.as_ref())?;
            for path in model {
                let name = path
                    .file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().into_owned());
                config.models.push(amoskys_pipeline::config::ModelSpec {
                    name,
                    path,
                    threshold: None,
                    severity: amoskys_schemas::Severity::Medium,
                });
            }
            let report = replay(ReplayOptions {
                inputs: paths,
                out: out.clone(),
                config,
                workers: workers.map(usize::from),
                progress: !no_progress,
                feature_set: features,
                logs: syslog,
            })?;
            for (file, err) in &report.file_errors {
                eprintln!("warning: {file}: {err}");
            }
            eprintln!("{}", report.line());
            if report.replaced_files > 0 {
                eprintln!(
                    "replaced {} file(s) of an earlier replay of the same input into {}",
                    report.replaced_files,
                    out.display()
                );
            }
            eprintln!("output: {}", out.display());
            if let Some(p) = summary_json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
            }
            if report.files == 0 {
                eprintln!("error: no capture could be read");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportTraining {
            data,
            out,
            val_fraction,
        } => {
            let r = amoskys_pipeline::export::export_training(
                &amoskys_pipeline::export::ExportOptions {
                    data,
                    out: out.clone(),
                    val_fraction,
                },
            )?;
            eprintln!(
                "exported {} rows: {} train, {} validation, {} left out between them; {} features ({} log-transformed) to {}",
                r.source_rows,
                r.train_rows,
                r.validation_rows,
                r.purged_rows,
                r.features,
                r.log_transformed,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            data,
            model,
            from,
            to,
            fpr,
            seed,
            hold_out,
            labels,
        } => {
            let m = amoskys_pipeline::train::train(&amoskys_pipeline::train::TrainOptions {
                data,
                model: model.clone(),
                from_us: from,
                to_us: to,
                fit: amoskys_operators::model::FitOptions {
                    false_positive_rate: fpr,
                    seed,
                },
                // clap lets only `hosts` and `time` through.
                hold_out: if hold_out == "time" {
                    amoskys_operators::model::HoldOut::Time
                } else {
                    amoskys_operators::model::HoldOut::Hosts
                },
                labels,
            })?;
            let t = &m.training;
            eprintln!(
                "trained on {} rows ({} windows, {} entities; fitted on {}): {} principal components explain {:.1} % of the variance, {} clusters; threshold {:.3} (false-positive rate {}) to {}",
                t.rows,
                t.windows,
                t.entities,
                t.fit_rows,
                t.components,
                100.0 * t.variance_explained,
                t.clusters,
                m.threshold,
                m.false_positive_rate,
                model.display()
            );
            if let Some(c) = &m.classifier {
                let counts: Vec<String> = c
                    .classes
                    .iter()
                    .zip(&c.rows)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                eprintln!(
                    "classifier of {} classes: {} rows",
                    c.classes.len(),
                    counts.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql {
            data,
            query,
            format,
            output,
        } => sql(&data, query, format, output.as_deref()),
        Command::Serve {
            data,
            listen,
            tokens,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => serve(amoskys_query::flight::FlightSettings {
            data,
            listen,
            tokens,
            tls: tls_cert.zip(tls_key),
            client_ca: tls_client_ca,
        }),
        Command::Wal { dir, records } => match show_wal(&dir, records) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                Ok(ExitCode::from(1))
            }
        },
        Command::Keygen { out } => match amoskys_sinks::keys::write_key_pair(&out) {
            Ok((key, pub_b64, pub_pem)) => {
                println!("{}", amoskys_sinks::keys::public_base64(&key));
                eprintln!(
                    "private key: {} (keep it secret); public key: {} and {}",
                    out.display(),
                    pub_b64.display(),
                    pub_pem.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Validate { config, replay } => match Config::load(&config).and_then(|c| {
            c.check_files()
                .and_then(|()| if replay { Ok(()) } else { c.check_job() })
                .map_err(|reason| amoskys_pipeline::config::ConfigError {
                    file: config.clone(),
                    line: None,
                    column: None,
                    reason,
                })
        }) {
            Ok(()) => {
                println!("{}: valid", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::GenerateCapture {
            out,
            seed,
            hosts,
            minutes,
            no_scan,
        } => {
            let n = generate_capture(&GenerateOptions {
                out: out.clone(),
                seed,
                hosts,
                minutes,
                scan: !no_scan,
            })?;
            let mut err = std::io::stderr().lock();
            writeln!(err, "wrote {} packets to {}", n, out.display())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `wal DIR [--records]`.
fn show_wal(dir: &std::path::Path, records: bool) -> std::io::Result<()> {
    use amoskys_sources::wal::log;
    use std::io::Write;
    let segs = log::segments(dir)?;
    if segs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no log segments (NNN.wal files) here",
        ));
    }
    let mut out = std::io::stdout().lock();
    let (mut total, mut lost, mut prev) = (0u64, 0u64, None::<u64>);
    for seg in segs {
        let buf = std::fs::read(&seg.path)?;
        let Some(s) = log::scan(&buf) else {
            writeln!(out, "{}: not a log segment", seg.path.display())?;
            continue;
        };
        for (off, payload) in &s.records {
            if let Some(p) = prev {
                lost += off.saturating_sub(p + 1);
            }
            prev = Some(*off);
            if records {
                let rec: Option<amoskys_schemas::Record> = bincode::deserialize(payload).ok();
                let line = serde_json::json!({"offset": off, "record": rec});
                writeln!(out, "{line}")?;
            }
        }
        total += s.records.len() as u64;
        if !records {
            let range = match (s.records.first(), s.records.last()) {
                (Some(a), Some(b)) => format!("offsets {}..={}", a.0, b.0),
                _ => "empty".to_string(),
            };
            writeln!(
                out,
                "{}: {} records, {range}, {} bytes{}{}",
                seg.path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                s.records.len(),
                seg.bytes,
                if s.damaged_stretches > 0 {
                    format!(", {} damaged stretch(es)", s.damaged_stretches)
                } else {
                    String::new()
                },
                if s.tail {
                    format!(", torn tail of {} bytes", buf.len() - s.good_end)
                } else {
                    String::new()
                },
            )?;
        }
    }
    if !records {
        writeln!(
            out,
            "{total} intact records; {lost} lost to damage (gaps in the offsets)"
        )?;
    }
    Ok(())
}
