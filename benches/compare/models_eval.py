"""Evaluation of the anomaly model against scikit-learn's IsolationForest, on
the shared attack captures (the attacker of each named by the data's own ground
truth, as tests/test_detections.py writes it) and the sample office with its
port scan.

Each capture is replayed; the training set is the benign windows: another
half-hour of the sample office without its scan, and every window of every
entity that is not an attacker, over the captures whose other entities are
benign (not the floods, whose other addresses are the attack's spoofed
sources). `train` fits the
pipeline's model on it and `replay --model` scores each capture; scikit-learn's
IsolationForest (random_state 0, 200 trees) is fitted on export-training's
transform of the same rows and scores the same windows. Per capture it prints,
for each method, the ROC AUC of the attacker against every other entity (each
entity's highest window score), and the true-positive rate at the method's
threshold: the share of the attacker's windows above it (the pipeline's model:
its own threshold; IsolationForest: the score its training rows exceed at the
same false-positive rate, 0.1 %). It also prints each method's false-positive
rate over the other entities' windows.

    .venv/bin/pip install scikit-learn==1.9.1   # once
    .venv/bin/python benches/compare/models_eval.py [BIN]

BIN defaults to target/release/amoskys-pipeline.
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target" / "release" / "amoskys-pipeline")

# The attacker of each capture (tests/test_detections.py gives the sources),
# and whether the other entities are benign. In the stopddos floods they are
# not: every other address is a spoofed source of the attack, so those
# captures give no training rows.
ATTACKS = {
    "pcap/ndpi/synscan.pcap": ("172.16.0.8", True),
    "pcap/stopddos/amp.TCP.reflection.SYNACK.pcap": ("10.10.10.10", False),
    "pcap/stopddos/pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng": ("10.10.10.10", False),
    "pcap/zeek/attacks/ftp-bruteforce.pcap": ("192.168.56.1", True),
    "pcap/ndpi/bad-dns-traffic.pcap": ("192.168.43.91", True),
    "pcap/esnet/nmap_80_w_service_detection.pcap": ("10.87.1.10", True),
}
FPR = 0.001


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))}: {r.stderr}")
    return r


def features(out):
    return f"read_parquet('{out}/features/**/*.parquet', hive_partitioning=false)"


def main():
    tmp = Path(tempfile.mkdtemp(prefix="models-eval-"))
    try:
        cases = dict(ATTACKS)
        office = tmp / "office.pcap"
        run("generate-capture", office, "--hosts", "24", "--minutes", "30", "--seed", "11")
        cases[str(office)] = ("10.1.0.250", True)
        # Another half-hour of the office without the scan: benign throughout.
        quiet = tmp / "quiet.pcap"
        run("generate-capture", quiet, "--hosts", "24", "--minutes", "30", "--seed", "3", "--no-scan")
        outs = {}
        for cap in [*cases, str(quiet)]:
            path = DATA / cap if not cap.startswith("/") else Path(cap)
            out = tmp / f"run{len(outs)}"
            run("replay", path, "--out", out, "--no-progress")
            outs[cap] = out
        # The benign windows: every entity but the attackers, over all captures.
        train = tmp / "train"
        (train / "features").mkdir(parents=True)
        shutil.copy(next(iter(outs.values())) / "feature_metadata.json", train)
        parts = [f"(select * from {features(o)} where entity <> '{cases.get(c, ('', True))[0]}')"
                 for c, o in outs.items() if cases.get(c, ("", True))[1]]
        duckdb.sql(f"copy ({' union all by name '.join(parts)}) to '{train}/features/benign.parquet'")
        model = tmp / "eval.model"
        run("train", "--data", train, "--model", model, "--fpr", FPR)
        m = json.loads(model.read_text())
        # IsolationForest on export-training's transform of the same rows.
        run("export-training", "--data", train, "--out", tmp / "export", "--val-fraction", "0")
        meta = json.loads((tmp / "export" / "training_metadata.json").read_text())
        names = [f["name"] for f in meta["features"]]
        t = pq.read_table(tmp / "export" / "train.parquet")
        x_train = np.column_stack([t.column(n).to_numpy() for n in names])
        forest = IsolationForest(n_estimators=200, random_state=0).fit(x_train)
        forest_train = -forest.score_samples(x_train)
        forest_threshold = np.quantile(forest_train, 1 - FPR)

        def transform(rows):
            cols = []
            for f in meta["features"]:
                v = np.ma.filled(np.ma.asarray(rows[f["name"]], dtype=float), np.nan)
                v = np.where(np.isnan(v), f["impute_value"], v)
                if f["log1p"]:
                    v = np.log1p(v)
                cols.append((v - f["center"]) / f["scale"])
            return np.column_stack(cols)

        print(f"training: {m['training']['rows']} benign windows of {m['training']['entities']} entities; "
              f"threshold at a {FPR:.1%} false-positive rate on them\n")
        print("| capture | attacker | windows (attacker / others) | AUC ours | AUC IsolationForest "
              "| TPR ours | TPR IsolationForest | FPR ours | FPR IsolationForest |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for cap, (attacker, _) in cases.items():
            out = tmp / f"scored{abs(hash(cap))}"
            path = DATA / cap if not cap.startswith("/") else Path(cap)
            run("replay", path, "--out", out, "--no-progress", "--model", model)
            ours = duckdb.sql(f"select entity, score, threshold from read_parquet('{out}/scores/**/*.parquet')").fetchall()
            rows = duckdb.sql(f"select * from {features(out)}").fetchnumpy()
            theirs = -forest.score_samples(transform(rows))
            entities = list(rows["entity"])
            forest_rows = list(zip(entities, theirs))
            result = []
            for scored, threshold in ((ours, m["threshold"]), (forest_rows, forest_threshold)):
                pairs = [(e, s) for e, s, *_ in scored]
                best = {}
                for e, s in pairs:
                    best[e] = max(best.get(e, -np.inf), s)
                labels = [e == attacker for e in best]
                auc = roc_auc_score(labels, list(best.values())) if 0 < sum(labels) < len(labels) else float("nan")
                att = [s for e, s in pairs if e == attacker]
                other = [s for e, s in pairs if e != attacker]
                tpr = sum(s > threshold for s in att) / len(att) if att else float("nan")
                fpr = sum(s > threshold for s in other) / len(other) if other else float("nan")
                result.append((auc, tpr, fpr, len(att), len(other)))
            (a1, t1, f1, na, no), (a2, t2, f2, _, _) = result
            name = "sample office, seed 11 (generate-capture)" if cap.startswith("/") else cap
            print(f"| {name} | {attacker} | {na} / {no} | {a1:.3f} | {a2:.3f} | {t1:.2f} | {t2:.2f} "
                  f"| {f1:.3f} | {f2:.3f} |")
        # Every other shared capture (but the fuzzing cases of tcpdump-malformed)
        # is ordinary traffic of some network: the share of its windows above
        # each method's threshold.
        benign = sorted(p for p in (DATA / "pcap").rglob("*")
                        if p.suffix in (".pcap", ".pcapng") and p.is_file()
                        and "tcpdump-malformed" not in p.parts
                        and str(p.relative_to(DATA)) not in ATTACKS)
        out = tmp / "benign"
        run("replay", *benign, "--out", out, "--no-progress", "--model", model)
        ours = duckdb.sql(f"select count(*) filter (where score > threshold), count(*), "
                          f"count(distinct entity) from read_parquet('{out}/scores/**/*.parquet')").fetchall()[0]
        rows = duckdb.sql(f"select * from {features(out)}").fetchnumpy()
        theirs = -forest.score_samples(transform(rows))
        print(f"\nOther shared captures ({len(benign)} files, {ours[1]} windows of {ours[2]} entities, "
              f"networks the training never saw): above the threshold, ours {ours[0] / ours[1]:.3f}, "
              f"IsolationForest {float(np.mean(theirs > forest_threshold)):.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
