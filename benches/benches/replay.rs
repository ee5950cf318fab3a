//! Replay throughput against a plain libpcap read of the same capture, in one run.
//!
//! The capture is `$AMOSKYS_BENCH_PCAP`, else `target/bench-data/bench.pcap` (built
//! by `benches/make-bench-data.sh` from ../shared/data), else the smaller
//! ../shared/data/bench/zeek-echo-connections.pcap. Each configuration runs
//! `ROUNDS` times (default 6), interleaved and each round starting one
//! configuration later, so that machine noise and what one run leaves to the
//! next hit all alike; the median
//! rate of each, and its ratio to the plain read, are printed, and the ratio of the
//! full catalogue to the packet features alone (the first feature set), both with
//! one worker, of the full replay with application metadata (the default)
//! to the same without it (`[flows] application_bytes = 0`), both with two,
//! and of the full replay with an anomaly model scoring every feature row
//! (`replay --model`; trained before the rounds on a half-hour of the sample
//! office) to the same without, both with two.
//!
//!     cargo bench -p amoskys-benches --bench replay

use std::path::{Path, PathBuf};
use std::time::Instant;

use amoskys_benches::median;

use amoskys_pipeline::config::Config;
use amoskys_pipeline::replay::{FeatureSet, ReplayOptions, replay};

// As in the binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rounds() -> usize {
    std::env::var("AMOSKYS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

fn capture() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var("AMOSKYS_BENCH_PCAP").ok().map(PathBuf::from),
        Some(root.join("target/bench-data/bench.pcap")),
        Some(root.join("../shared/data/bench/zeek-echo-connections.pcap")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Reads every packet through libpcap and touches its bytes: the floor any
/// pcap-based tool starts from.
fn plain_read(path: &Path) -> u64 {
    let mut cap = pcap::Capture::from_file(path).expect("open capture");
    let (mut n, mut sum) = (0u64, 0u64);
    while let Ok(p) = cap.next_packet() {
        n += 1;
        sum = sum
            .wrapping_add(u64::from(p.header.len))
            .wrapping_add(u64::from(p.data.first().copied().unwrap_or(0)));
    }
    std::hint::black_box(sum);
    n
}

fn full_replay(path: &Path, workers: usize, out: &Path) -> u64 {
    replay_with(path, workers, out, FeatureSet::All, Config::default())
}

/// The full replay without application metadata: no payload kept or read.
fn without_application(path: &Path, workers: usize, out: &Path) -> u64 {
    let mut config = Config::default();
    config.flows.application_bytes.0 = 0;
    replay_with(path, workers, out, FeatureSet::All, config)
}

/// The full replay with an anomaly model scoring every feature row.
fn with_model(path: &Path, workers: usize, out: &Path, model: &Path) -> u64 {
    let mut config = Config::default();
    config.models.push(amoskys_pipeline::config::ModelSpec {
        name: "bench".into(),
        path: model.to_path_buf(),
        threshold: None,
        severity: amoskys_schemas::Severity::Medium,
    });
    replay_with(path, workers, out, FeatureSet::All, config)
}

/// A model of half an hour of the sample office (generate-capture, no scan),
/// written in `dir`.
fn train_model(dir: &Path) -> PathBuf {
    use amoskys_pipeline::generate::{GenerateOptions, generate_capture};
    use amoskys_pipeline::train::{TrainOptions, train};
    let capture = dir.join("office.pcap");
    generate_capture(&GenerateOptions {
        out: capture.clone(),
        seed: 3,
        hosts: 24,
        minutes: 30,
        scan: false,
    })
    .expect("generate");
    let data = dir.join("office");
    replay_with(&capture, 2, &data, FeatureSet::All, Config::default());
    let model = dir.join("office.model");
    train(&TrainOptions {
        data,
        model: model.clone(),
        from_us: None,
        to_us: None,
        fit: Default::default(),
        hold_out: Default::default(),
        labels: None,
    })
    .expect("train");
    model
}

fn replay_with(
    path: &Path,
    workers: usize,
    out: &Path,
    feature_set: FeatureSet,
    config: Config,
) -> u64 {
    let report = replay(ReplayOptions {
        inputs: vec![path.display().to_string()],
        out: out.to_path_buf(),
        config,
        workers: Some(workers),
        progress: false,
        feature_set,
        logs: Vec::new(),
    })
    .expect("replay");
    report.decode.packets
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let Some(path) = capture() else {
        eprintln!("no benchmark capture found: run benches/make-bench-data.sh");
        return;
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("capture: {} ({} MB)", path.display(), size / 1_000_000);
    let models = tempfile::tempdir().expect("tempdir");
    let model = train_model(models.path());
    type Run<'a> = Box<dyn Fn(&Path) -> u64 + 'a>;
    let configs: [(&str, Run); 6] = [
        ("plain libpcap read", Box::new(|_| plain_read(&path))),
        (
            "replay -w 1, packet features only",
            Box::new(|out| replay_with(&path, 1, out, FeatureSet::Packet, Config::default())),
        ),
        (
            "replay -w 1 (flows, features, parquet)",
            Box::new(|out| full_replay(&path, 1, out)),
        ),
        (
            "replay -w 2 (flows, features, parquet)",
            Box::new(|out| full_replay(&path, 2, out)),
        ),
        (
            "replay -w 2 without application metadata",
            Box::new(|out| without_application(&path, 2, out)),
        ),
        (
            "replay -w 2 with an anomaly model",
            Box::new(|out| with_model(&path, 2, out, &model)),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut packets = 0;
    for round in 0..rounds() {
        // Each round starts one configuration later: what a run leaves behind
        // (dirty pages, freed memory) falls on every configuration alike.
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let f = &configs[i].1;
            // A fresh output directory, made and removed outside the timing.
            let out = tempfile::tempdir().expect("tempdir");
            let t = Instant::now();
            packets = f(out.path());
            rates[i].push(packets as f64 / t.elapsed().as_secs_f64());
            drop(out);
        }
    }
    println!(
        "packets: {packets}; median of {} interleaved rounds",
        rounds()
    );
    let base = median(rates[0].clone());
    let (packet_only, full) = (median(rates[1].clone()), median(rates[2].clone()));
    let (with_app, without_app) = (median(rates[3].clone()), median(rates[4].clone()));
    let scored = median(rates[5].clone());
    for ((name, _), r) in configs.iter().zip(rates) {
        let m = median(r);
        println!(
            "{name:<42} {:>12.0} packets/s   {:>6.1} % of plain read",
            m,
            100.0 * m / base
        );
    }
    println!(
        "full catalogue / packet features only (-w 1): {:.1} %",
        100.0 * full / packet_only
    );
    println!(
        "with / without application metadata (-w 2): {:.1} %",
        100.0 * with_app / without_app
    );
    println!(
        "with / without an anomaly model (-w 2): {:.1} %",
        100.0 * scored / with_app
    );
}
