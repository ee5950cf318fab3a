//! Per-packet kernels, each on its own: decode, flow table, window accumulator.
//!
//!     cargo bench -p amoskys-benches --bench kernels

use std::hint::black_box;
use std::path::Path;

use amoskys_operators::features::{Obs, PaneAcc};
use amoskys_operators::{FlowAssembler, FlowConfig};
use amoskys_schemas::Packet;
use amoskys_sources::pcap::{DecodeStats, decode, linktype};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Frames and decoded packets of the shared echo-connections capture.
fn load() -> (Vec<Vec<u8>>, Vec<Packet>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/bench/zeek-echo-connections.pcap");
    let mut frames = Vec::new();
    let mut packets = Vec::new();
    if let Ok(mut cap) = pcap::Capture::from_file(&path) {
        let mut st = DecodeStats::default();
        while let Ok(p) = cap.next_packet() {
            let mut pk = Packet {
                ts_ns: p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec * 1000,
                ..Default::default()
            };
            if decode(linktype::ETHERNET, p.data, p.header.len, &mut pk, &mut st).is_ok() {
                packets.push(pk);
            }
            frames.push(p.data.to_vec());
        }
    }
    (frames, packets)
}

fn kernels(c: &mut Criterion) {
    let (frames, packets) = load();
    if frames.is_empty() {
        eprintln!("../shared/data/bench/zeek-echo-connections.pcap not found; nothing to measure");
        return;
    }
    let mut g = c.benchmark_group(module_path!());
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut st = DecodeStats::default();
            let mut p = Packet::default();
            for f in &frames {
                let _ = black_box(decode(
                    linktype::ETHERNET,
                    f,
                    f.len() as u32,
                    &mut p,
                    &mut st,
                ));
            }
        })
    });
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.bench_function("flow_table", |b| {
        b.iter_batched(
            || {
                (
                    FlowAssembler::new(FlowConfig::default()),
                    Vec::with_capacity(1 << 16),
                )
            },
            |(mut t, mut out)| {
                for p in &packets {
                    t.observe(p, &mut out);
                }
                t.flush(&mut out);
                black_box(out.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("pane_accumulate", |b| {
        b.iter_batched(
            || std::collections::HashMap::<_, PaneAcc>::with_capacity(1024),
            |mut m| {
                for p in &packets {
                    for o in Obs::of(p) {
                        m.entry((o.entity, o.ts_ns / 30_000_000_000))
                            .or_default()
                            .observe(&o);
                    }
                }
                black_box(m.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
