//! The command line: every subcommand and option with its help text (clap
//! derive), so `--help` cannot drift from the arguments it describes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use amoskys_pipeline::replay::FeatureSet;

/// Security telemetry in; flows, per-host features and Parquet out.
///
/// `amoskys-pipeline --config flows.toml` runs the long-running job until SIGINT
/// or SIGTERM: syslog listeners (UDP, TCP), MQTT subscriptions, SNMP polling and
/// live packet capture. Records land in the `events` table, packets in `flows`,
/// and both in per-entity `features` every 30 seconds.
///
/// `replay` runs recorded packet captures through a timely dataflow: packets are decoded,
/// assembled into bidirectional flows (with Community ID), and summarised per host
/// into 60-second windows that start every 30 seconds. The results are Parquet
/// tables that DuckDB, DataFusion, pandas or Spark read directly.
#[derive(Parser, Debug)]
#[command(name = "amoskys-pipeline", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    amoskys-pipeline generate-capture sample.pcap\n  \
    amoskys-pipeline replay sample.pcap --out data\n  \
    amoskys-pipeline replay 'captures/*.pcap' --out data -w 2 --config flows.toml\n  \
    amoskys-pipeline validate --config flows.toml\n  \
    amoskys-pipeline sql --data data \"SELECT * FROM alerts\"\n  \
    amoskys-pipeline --config flows.toml\n  \
    amoskys-pipeline --default    (syslog on 127.0.0.1:5514; try: logger -n 127.0.0.1 -P 5514 -d hello)")]
pub struct Cli {
    /// Run the long-running job with this configuration (flows.toml): listen on
    /// every configured source until SIGINT or SIGTERM, then flush and exit 0.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run the long-running job on the built-in default configuration
    /// (examples/default.toml): syslog on UDP and TCP 127.0.0.1:5514, metrics on
    /// 127.0.0.1:9898, output in ./data.
    #[arg(long, conflicts_with = "config")]
    pub default: bool,
    /// Serve Prometheus metrics of the long-running job on ADDR (e.g. 127.0.0.1:9898).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Worker threads of the long-running job.
    #[arg(long = "workers", short = 'w', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Log filter (error, warn, info, debug, trace, or per-module directives).
    #[arg(long, global = true, default_value = "warn", env = "AMOSKYS_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replay recorded captures into flows and features (Parquet).
    ///
    /// Each PATH is a pcap or pcapng file, a directory (every .pcap, .pcapng, .cap
    /// and .dmp file below it) or a quoted glob. All captures are replayed as one
    /// stream in time order (ordered by their first packet), so flows continue
    /// across rotated files. Packets that are not IP, or cannot be decoded, are
    /// counted by reason; a file that cannot be read is reported and skipped.
    ///
    /// Log files given with --syslog are replayed beside the captures, through the
    /// same windows, features and detections as in the long-running job (the
    /// correlation of failed logins in the logs with connections in the
    /// captures included): each line is a message timed by its own timestamp.
    ///
    /// Output: DIR/flows/ and DIR/features/ partitioned by date= and hour=, plus
    /// DIR/feature_metadata.json describing every feature column; DIR/events/
    /// with the log lines when --syslog is given; DIR/alerts/ when a detection
    /// fired.
    #[command(after_help = "Reading the output:\n  \
        duckdb -c \"SELECT * FROM read_parquet('DIR/features/**/*.parquet', hive_partitioning=true) LIMIT 5\"")]
    Replay {
        /// Capture files, directories or globs.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// Output directory (created if missing).
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Configuration file (flows.toml); defaults apply without one.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Worker threads; the rows written do not depend on it.
        #[arg(long = "workers", short = 'w', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
        /// Never draw the progress bar (it is drawn only when stderr is a terminal).
        #[arg(long)]
        no_progress: bool,
        /// Also write the run's summary as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        summary_json: Option<PathBuf>,
        /// Which features to compute: the whole catalogue, or only the packet
        /// features (smaller output; the event families are null in a replay
        /// without --syslog).
        #[arg(long, value_enum, default_value_t = FeatureSet::All)]
        features: FeatureSet,
        /// A log file to replay beside the captures (auth.log, secure, messages:
        /// RFC 3164 or RFC 5424 lines, one message each); may be repeated. Lines
        /// without a year take the one that puts them at most a day after the
        /// file's modification time.
        #[arg(long, value_name = "FILE")]
        syslog: Vec<PathBuf>,
        /// An anomaly model made by `train` to score every feature row with
        /// (the model's alerts are named after the file: site.model raises
        /// `site`); may be repeated. Adds to the config's `[[models]]`.
        #[arg(long, value_name = "FILE")]
        model: Vec<PathBuf>,
    },
    /// Turn a run's features into model-ready train and validation Parquet.
    ///
    /// Reads DIR/features and DIR/feature_metadata.json; per feature, fitted on the
    /// training rows: nulls imputed (counts 0, others the training median),
    /// log1p where the values are non-negative and skewed, then scaled by median
    /// and interquartile range. The earliest windows train, the latest validate,
    /// with the window that overlaps both left out. Writes OUT/train.parquet,
    /// OUT/validation.parquet and OUT/training_metadata.json (every transform's
    /// parameters). The same input gives the same bytes.
    #[command(after_help = "Example:\n  \
        amoskys-pipeline replay capture.pcap --out data\n  \
        amoskys-pipeline export-training --data data --out training --val-fraction 0.2")]
    ExportTraining {
        /// Output root of a replay or a long-running job.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where the split goes (created if missing).
        #[arg(long, short, value_name = "DIR")]
        out: PathBuf,
        /// Share of the rows, from the latest windows, kept for validation.
        #[arg(long, default_value_t = 0.2, value_name = "F")]
        val_fraction: f64,
    },
    /// Fit an anomaly model to a run's features (smartcore: PCA and k-means).
    ///
    /// Reads DIR/features and DIR/feature_metadata.json: the windows you say
    /// were normal (by default all of them). Each feature goes through the
    /// transform of export-training, fitted on these rows; the model learns
    /// which combinations of features and which kinds of window are usual, and
    /// sets its threshold at the score that rows held out of the fit (by host,
    /// or by stretch of time) exceed at the chosen false-positive rate. The
    /// file holds everything scoring needs; the same
    /// rows give the same bytes. A model learns what it was shown: attacks in
    /// the training windows become normal. See docs/MODELS.md.
    #[command(after_help = "Examples:\n  \
        amoskys-pipeline replay monday.pcap --out normal\n  \
        amoskys-pipeline train --data normal --model site.model\n  \
        amoskys-pipeline train --data data --model site.model --from 2024-01-15T00:00:00Z --to 2024-01-16T00:00:00Z --fpr 0.0005")]
    Train {
        /// Output root of a replay or a long-running job.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where the model file goes.
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// Train on windows starting at or after this time (RFC 3339, e.g.
        /// 2024-01-15T09:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<i64>,
        /// Train on windows starting before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<i64>,
        /// Share of training windows allowed above the threshold: the
        /// false-positive rate the threshold is set at.
        #[arg(long, default_value_t = 0.001, value_name = "RATE")]
        fpr: f64,
        /// Seed of the k-means initialisation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// What the threshold is calibrated on: windows of hosts held out of
        /// the fit (`hosts`: stays near the rate on hosts and networks the
        /// model never saw), or of stretches of time held out (`time`: a lower
        /// threshold, more sensitive on the network trained on, more false
        /// alarms on new hosts). Measured in docs/MODELS.md.
        #[arg(long, default_value = "hosts", value_name = "BY", value_parser = ["hosts", "time"])]
        hold_out: String,
        /// A CSV of labelled windows — header `entity,from,to,label`, then
        /// e.g. `10.1.0.250,2024-01-15T09:02:00Z,2024-01-15T09:10:00Z,scan` —
        /// to learn as kinds of their own: the model of normal leaves them out,
        /// and a classifier (logistic regression) learns them; rows it puts in
        /// a class raise alerts named `<model>.<label>`.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
    },
    /// Query the Parquet output with SQL (DataFusion).
    ///
    /// Every folder of DIR holding Parquet files is a table: flows, events,
    /// features, alerts, and any other the pipeline writes. Their `date` and
    /// `hour` partition columns are text ('2024-01-15', '09'): a filter on them
    /// reads only the matching folders. Without QUERY, queries are read from
    /// standard input, separated by `;` (or one per line when there is none).
    /// A query that fails prints DataFusion's message and exits 1. The tables a
    /// run can produce are there even when it wrote no rows to them (a run
    /// without alerts has an empty `alerts`). A running job finishes its files
    /// every `roll_interval`; rows of files still open are served by its Flight
    /// endpoint (`[sinks.flight]`, docs/QUERY.md), not here.
    #[command(after_help = "Examples:\n  \
        amoskys-pipeline sql --data data \"SELECT entity, max(bytes_out) FROM features WHERE date = '2024-01-15' GROUP BY 1 ORDER BY 2 DESC LIMIT 10\"\n  \
        amoskys-pipeline sql --data data --format csv \"SELECT * FROM alerts\" > alerts.csv\n  \
        amoskys-pipeline sql --data data --format parquet --output top.parquet \"SELECT * FROM flows WHERE dst_port = 22\"\n  \
        echo \"SHOW TABLES; DESCRIBE flows\" | amoskys-pipeline sql --data data")]
    Sql {
        /// Output root of a replay or a long-running job.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The query; read from standard input when left out.
        #[arg(value_name = "QUERY")]
        query: Option<String>,
        /// How rows are written.
        #[arg(long, short, value_enum, default_value_t = amoskys_query::sql::Format::Table)]
        format: amoskys_query::sql::Format,
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Serve the Parquet output over Arrow Flight and Flight SQL.
    ///
    /// Plain Flight: ListFlights lists the tables with their schemas; a
    /// descriptor path [TABLE] (or [TABLE, AFTER], an RFC 3339 time) or a command
    /// holding SQL gives a flight whose ticket DoGet reads; SQL text is a ticket
    /// too. Flight SQL: statement queries and the catalog `amoskys`, schema
    /// `public`, for ADBC and JDBC clients. Results stream batch by batch. Runs
    /// until SIGINT or SIGTERM. docs/QUERY.md has connection examples.
    #[command(after_help = "Examples:\n  \
        amoskys-pipeline serve --data data --listen 127.0.0.1:8815\n  \
        AMOSKYS_FLIGHT_TOKEN=s3cret amoskys-pipeline serve --data data --listen 0.0.0.0:8815 \\\n      \
        --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem")]
    Serve {
        /// Output root of a replay or a long-running job.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8815")]
        listen: std::net::SocketAddr,
        /// A bearer token clients must send (`authorization: Bearer <token>`);
        /// repeat for several. Without any, calls are not authenticated.
        #[arg(long = "token", value_name = "TOKEN", env = "AMOSKYS_FLIGHT_TOKEN")]
        tokens: Vec<String>,
        /// Server certificate (PEM): serve over TLS.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Server private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA (PEM) that client certificates must chain to: mutual TLS.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Create an Ed25519 key pair for signing alert deliveries.
    ///
    /// Writes the private key to FILE (64 hex digits, mode 0600; an existing file
    /// is never overwritten), the public key to FILE.pub (base64) and FILE.pub.pem
    /// (PEM), and prints the public key. Point `[sinks.webhook] signing_key` at
    /// FILE and give the receiver the public key (docs/WEBHOOK.md).
    Keygen {
        /// Private key file to create.
        #[arg(value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a configuration file without running anything.
    ///
    /// Checks what the long-running job checks before it starts: the file, the
    /// files it names (keys, certificates, indicators), that it has a source and
    /// that its output directory can be written. Reports every problem in the
    /// order of the file, the first with its line (and column); exits 0 when the
    /// file is valid, 1 when it is not.
    #[command(after_help = "Examples:\n  \
        amoskys-pipeline validate --config flows.toml\n  \
        amoskys-pipeline validate --config replay.toml --replay")]
    Validate {
        /// Configuration file (flows.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Check it as `replay --config` uses it: sources are not needed there.
        #[arg(long)]
        replay: bool,
    },
    /// Show what a source's write-ahead log holds, without changing it.
    ///
    /// DIR is one source's log: `_wal/<source name>` in the Parquet sink's
    /// directory unless `[wal] dir` says otherwise. Prints each segment's first
    /// and last offset, its intact records, damaged stretches (records lost to
    /// damage show as gaps in the offsets) and a torn tail, which the job cuts
    /// at its next start. The `events` table's `_commits.json` says up to which
    /// offset the records are in committed files.
    #[command(after_help = "Examples:\n  \
        amoskys-pipeline wal data/_wal/edge\n  \
        amoskys-pipeline wal data/_wal/edge --records | head")]
    Wal {
        /// The log directory of one source.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Print every intact record as one JSON object per line (offset and
        /// record) instead of the summary.
        #[arg(long)]
        records: bool,
    },
    /// Write a sample capture: a small office network over a few minutes.
    ///
    /// Web and TLS sessions, DNS look-ups, pings, IPv6 neighbours, and one host
    /// scanning another's ports — real packets with correct headers, written as a
    /// pcap file, the same bytes for the same options. Used by the README's first
    /// command and by the tests.
    GenerateCapture {
        /// Output pcap file.
        #[arg(value_name = "OUT")]
        out: PathBuf,
        /// Seed of the generator.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Client hosts.
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u16).range(1..=4000))]
        hosts: u16,
        /// Minutes of traffic.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1440))]
        minutes: u16,
        /// Leave the port scan out: only the office's ordinary traffic, e.g. to
        /// train a model on.
        #[arg(long)]
        no_scan: bool,
    },
}

/// An RFC 3339 time as UTC microseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2024-01-15T09:00:00Z: {e}"))
}
