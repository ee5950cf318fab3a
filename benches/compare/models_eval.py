"""Evaluation of the anomaly model against scikit-learn's IsolationForest, on
the shared attack captures (the attacker of each named by the data's own ground
truth, as tests/test_detections.py writes it), the sample office with its port
scan, and every other shared capture as benign traffic of networks the models
never saw.

Two ways to train, both on benign windows only:
- the *site* model: another half-hour of the sample office without its scan,
  and every entity but the attacker in the attack captures whose other
  entities are benign (not the floods, whose other addresses are the attack's
  spoofed sources) — a model of a few networks, as a site trains its own;
- the *broad* model: the same and every benign shared capture besides.
`train` fits the pipeline's model and `replay --model` scores; scikit-learn's
IsolationForest (random_state 0, 200 trees) is fitted on export-training's
transform of the same rows and scores the same windows, its threshold the score
its training rows exceed at the same false-positive rate.

1. Attacks: per capture, the ROC AUC of the attacker against every other entity
   (each entity's highest window score) and the share of the attacker's
   windows above the threshold (TPR) and of the others' (FPR), for the site
   model and IsolationForest trained on the same rows; and the TPR of the
   broad model.
2. Benign: the benign captures are split into five folds by file; each fold is
   scored by a broad model trained without it (and its IsolationForest), so
   every window is judged by a model that never saw its network, at set
   false-positive rates of 0.1 %, 1 % and 5 %; and by the site model.

    .venv/bin/pip install scikit-learn==1.9.1   # once
    .venv/bin/python benches/compare/models_eval.py [BIN] [--hold-out time]

BIN defaults to target/release/amoskys-pipeline; `--hold-out time` trains the
pipeline's models with `train --hold-out time` instead of the default (hosts).
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
ARGS = [a for a in sys.argv[1:] if a not in ("--hold-out", "time", "hosts")]
HOLD_OUT = "time" if "time" in sys.argv[1:] else "hosts"
BIN = Path(ARGS[0] if ARGS else ROOT / "target" / "release" / "amoskys-pipeline")

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
    "pcap/zeek/attacks/dhcp_flood.pcap": ("90:b1:1c:99:49:29", False),
}
FPR = 0.001
RATES = (0.001, 0.01, 0.05)
FOLDS = 5


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))}: {r.stderr}")
    return r


def features(out):
    return f"read_parquet('{out}/features/**/*.parquet', hive_partitioning=false)"


def benign_windows(outs, cases):
    """The benign rows of each run: every entity but the attacker."""
    return [f"(select * from {features(o)} where entity <> '{cases.get(c, ('', True))[0]}')"
            for c, o in outs.items() if cases.get(c, ("", True))[1]]


class Forest:
    """IsolationForest on export-training's transform of a training set."""

    def __init__(self, train, tmp):
        run("export-training", "--data", train, "--out", tmp / "export", "--val-fraction", "0")
        self.meta = json.loads((tmp / "export" / "training_metadata.json").read_text())
        names = [f["name"] for f in self.meta["features"]]
        t = pq.read_table(tmp / "export" / "train.parquet")
        x = np.column_stack([t.column(n).to_numpy() for n in names])
        self.forest = IsolationForest(n_estimators=200, random_state=0).fit(x)
        self.training = -self.forest.score_samples(x)
        shutil.rmtree(tmp / "export")

    def threshold(self, rate):
        return np.quantile(self.training, 1 - rate)

    def score(self, rows):
        cols = []
        for f in self.meta["features"]:
            v = np.ma.filled(np.ma.asarray(rows[f["name"]], dtype=float), np.nan)
            v = np.where(np.isnan(v), f["impute_value"], v)
            if f["log1p"]:
                v = np.log1p(v)
            cols.append((v - f["center"]) / f["scale"])
        return -self.forest.score_samples(np.column_stack(cols))


def training_dir(tmp, name, parts, metadata_from):
    train = tmp / name
    (train / "features").mkdir(parents=True)
    shutil.copy(metadata_from / "feature_metadata.json", train)
    duckdb.sql(f"copy ({' union all by name '.join(parts)}) to '{train}/features/benign.parquet'")
    return train


def train_model(train, path, rate):
    run("train", "--data", train, "--model", path, "--fpr", rate, "--hold-out", HOLD_OUT)
    return json.loads(path.read_text())


def scores(out, model):
    """(entity, score) of one model's rows in a run's scores table."""
    return duckdb.sql(f"select entity, score from read_parquet('{out}/scores/**/*.parquet') "
                      f"where model = '{model}'").fetchall()


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
        # Every other shared capture (but the fuzzing cases of tcpdump-malformed)
        # is ordinary traffic of some network, each replayed on its own.
        benign = sorted(p for p in (DATA / "pcap").rglob("*")
                        if p.suffix in (".pcap", ".pcapng") and p.is_file()
                        and "tcpdump-malformed" not in p.parts
                        and str(p.relative_to(DATA)) not in ATTACKS)
        benign_outs = []
        for i, p in enumerate(benign):
            out = tmp / f"benign{i}"
            run("replay", p, "--out", out, "--no-progress")
            if (out / "features").is_dir() and any((out / "features").rglob("*.parquet")):
                benign_outs.append((p, out))
        base = benign_windows(outs, cases)
        first = next(iter(outs.values()))

        # 1. Attacks.
        site_train = training_dir(tmp, "site-train", base, first)
        site = train_model(site_train, tmp / "site.model", FPR)
        forest = Forest(site_train, tmp)
        forest_threshold = forest.threshold(FPR)
        broad_train = training_dir(tmp, "broad-train", base + [f"(select * from {features(o)})" for _, o in benign_outs], first)
        broad = train_model(broad_train, tmp / "broad.model", FPR)
        for name, m in (("site", site), ("broad", broad)):
            t = m["training"]
            print(f"{name} model: {t['rows']} benign windows of {t['entities']} entities; threshold "
                  f"{m['threshold']:.2f} at a {FPR:.1%} false-positive rate on {t['calibration']}")
        print("\n| capture | attacker | windows (attacker / others) | AUC site | AUC IsolationForest "
              "| TPR site | TPR IsolationForest | FPR site | FPR IsolationForest | TPR broad |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for cap, (attacker, _) in cases.items():
            out = tmp / f"scored{abs(hash(cap))}"
            path = DATA / cap if not cap.startswith("/") else Path(cap)
            run("replay", path, "--out", out, "--no-progress", "--model", tmp / "site.model",
                "--model", tmp / "broad.model")
            rows = duckdb.sql(f"select * from {features(out)}").fetchnumpy()
            result = []
            for scored, threshold in ((scores(out, "site"), site["threshold"]),
                                      (list(zip(list(rows["entity"]), forest.score(rows))), forest_threshold),
                                      (scores(out, "broad"), broad["threshold"])):
                best = {}
                for e, s in scored:
                    best[e] = max(best.get(e, -np.inf), s)
                labels = [e == attacker for e in best]
                auc = roc_auc_score(labels, list(best.values())) if 0 < sum(labels) < len(labels) else float("nan")
                att = [s for e, s in scored if e == attacker]
                other = [s for e, s in scored if e != attacker]
                tpr = sum(s > threshold for s in att) / len(att) if att else float("nan")
                fpr = sum(s > threshold for s in other) / len(other) if other else float("nan")
                result.append((auc, tpr, fpr, len(att), len(other)))
            (a1, t1, f1, na, no), (a2, t2, f2, _, _), (_, t3, _, _, _) = result
            name = "sample office, seed 11 (generate-capture)" if cap.startswith("/") else cap
            print(f"| {name} | {attacker} | {na} / {no} | {a1:.3f} | {a2:.3f} | {t1:.2f} | {t2:.2f} "
                  f"| {f1:.3f} | {f2:.3f} | {t3:.2f} |")

        # 2. Benign captures, each fold by a broad model that never saw it.
        above = {(w, r): 0 for w in ("ours", "forest") for r in RATES}
        site_above, windows, entities = 0, 0, 0
        flagged = []
        for k in range(FOLDS):
            held = [p for i, (p, _) in enumerate(benign_outs) if i % FOLDS == k]
            rest = [o for i, (_, o) in enumerate(benign_outs) if i % FOLDS != k]
            fold = tmp / f"fold{k}"
            fold.mkdir()
            train = training_dir(fold, "train", base + [f"(select * from {features(o)})" for o in rest], first)
            models = {r: train_model(train, fold / f"fold{i}.model", r) for i, r in enumerate(RATES)}
            fold_forest = Forest(train, fold)
            out = fold / "scored"
            run("replay", *held, "--out", out, "--no-progress", "--model", fold / "fold0.model",
                "--model", tmp / "site.model")
            ours = scores(out, "fold0")
            rows = duckdb.sql(f"select * from {features(out)}").fetchnumpy()
            theirs = fold_forest.score(rows)
            windows += len(ours)
            entities += len({e for e, _ in ours})
            site_above += sum(s > site["threshold"] for _, s in scores(out, "site"))
            for r in RATES:
                above[("ours", r)] += sum(s > models[r]["threshold"] for _, s in ours)
                above[("forest", r)] += int(np.sum(theirs > fold_forest.threshold(r)))
            flagged += [(e, s, models[RATES[0]]["threshold"]) for e, s in ours if s > models[RATES[0]]["threshold"]]
        print(f"\nBenign shared captures: {len(benign_outs)} files with feature rows, {windows} windows of "
              f"{entities} entities; each of {FOLDS} folds (by file) scored by a broad model trained "
              f"without it, and by the site model:\n")
        print("| false-positive rate set | above, broad model | above, IsolationForest |")
        print("|---:|---:|---:|")
        for r in RATES:
            o, f = above[("ours", r)], above[("forest", r)]
            print(f"| {r:.1%} | {o} ({o / windows:.1%}) | {f} ({f / windows:.1%}) |")
        print(f"\nThe site model ({FPR:.1%}): {site_above} ({site_above / windows:.1%}) above its threshold.")
        for e, s, th in flagged:
            print(f"  above the broad model's {RATES[0]:.1%} threshold: {e} score {s:.2f} (threshold {th:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
