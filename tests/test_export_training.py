"""`amoskys-pipeline export-training`: the split, the transforms and their
parameters, checked with pyarrow and plain Python against the features table
the same replay wrote."""
import hashlib
import json
import math

import pyarrow.parquet as pq

from conftest import query, replay, run_bin, table


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_is_reproducible_split_by_time_and_its_parameters_reproduce_it(generated, tmp_path):
    data = tmp_path / "data"
    replay(generated, data)
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        run_bin("export-training", "--data", data, "--out", o, "--val-fraction", "0.2")
    for name in ("train.parquet", "validation.parquet", "training_metadata.json"):
        assert sha(outs[0] / name) == sha(outs[1] / name), name

    meta = json.loads((outs[0] / "training_metadata.json").read_text())
    train = pq.read_table(outs[0] / "train.parquet").to_pylist()
    val = pq.read_table(outs[0] / "validation.parquet").to_pylist()
    (n,), = query(f"select count(*) from {table(data, 'features')}")
    split = meta["split"]
    assert split["train_rows"] == len(train) and split["validation_rows"] == len(val)
    assert len(train) + len(val) + split["purged_rows"] == n == meta["source_rows"]
    assert val and train
    # By time, with the overlapping window left out: every validation window starts
    # at least one window length (60 s) after the last training window.
    last_train = max(r["window_start"] for r in train)
    first_val = min(r["window_start"] for r in val)
    assert (first_val - last_train).total_seconds() >= 60
    # Roughly 80/20 (whole windows move together).
    assert 0.6 < len(train) / n < 0.95

    # The parameters reproduce the values, from the raw features table.
    feats = meta["features"]
    names = [f["name"] for f in feats]
    raw = {}
    cols = ", ".join(names)
    for row in query(f"select entity, epoch_us(window_start), {cols} from {table(data, 'features')}"):
        raw[(row[0], row[1])] = row[2:]

    def transform(f, x):
        x = f["impute_value"] if x is None else float(x)
        if f["log1p"]:
            x = math.log1p(x)
        return (x - f["center"]) / f["scale"]

    for split_rows in (train, val):
        for r in split_rows:
            key = (r["entity"], int(r["window_start"].timestamp() * 1_000_000))
            for f, x in zip(feats, raw[key]):
                want = transform(f, x)
                assert abs(r[f["name"]] - want) <= 1e-9 * max(1.0, abs(want)), (f["name"], key)

    # The parameters are fitted on the training rows: the median of a scaled,
    # non-constant training column is 0.
    for f in feats:
        col = sorted(r[f["name"]] for r in train)
        mid = len(col) // 2
        median = col[mid] if len(col) % 2 else (col[mid - 1] + col[mid]) / 2
        assert abs(median) < 1e-9, f["name"]
    assert any(f["log1p"] for f in feats) and not all(f["log1p"] for f in feats)


def test_export_refuses_a_bad_fraction_clearly(generated, tmp_path):
    data = tmp_path / "data"
    replay(generated, data)
    r = run_bin("export-training", "--data", data, "--out", tmp_path / "o", "--val-fraction", "1.5",
                check=False)
    assert r.returncode == 2 and "--val-fraction" in r.stderr
    r = run_bin("export-training", "--data", tmp_path / "nothing", "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "feature_metadata.json" in r.stderr
