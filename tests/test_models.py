"""Anomaly models: `train` on an office network's ordinary traffic (the sample
capture without its port scan), then `replay --model` of the same office on
other days, with and without the scan. The model, fitted with smartcore,
must name the scanner, rank its target next, say why, stay near its
false-positive rate on ordinary traffic, give the same bytes for the same
rows, and refuse files it cannot use."""
import json
import socket

from conftest import query, replay, run_bin, table


def test_the_same_rows_give_the_same_model(trained):
    _, data, (a, b) = trained
    assert a.read_bytes() == b.read_bytes()
    m = json.loads(a.read_text())
    assert m["format"] == "amoskys-model" and m["smartcore"] == "0.7.0"
    (rows,), = query(f"select count(*) from {table(data, 'features')}")
    assert m["training"]["rows"] == rows
    meta = json.loads((data / "feature_metadata.json").read_text())
    assert [f["name"] for f in m["features"]] == [f["name"] for f in meta["features"]]
    # The threshold is the quantile at the false-positive rate of the scores
    # of entities held out of the fit, above the training rows' own.
    assert "held out by hosts in 5 folds" in m["training"]["calibration"], m["training"]
    held = dict((q, s) for q, s in m["training"]["held_out_quantiles"])
    own = dict((q, s) for q, s in m["training"]["score_quantiles"])
    assert m["threshold"] == held[0.999] and m["threshold"] > own[0.999]
    # A time range trains on those windows only.
    first = m["training"]["first_window_us"]
    part = trained[0] / "part.model"
    run_bin("train", "--data", data, "--model", part,
            "--from", "1970-01-01T00:00:00Z", "--to", _rfc3339(first + 600_000_000))
    assert json.loads(part.read_text())["training"]["windows"] == 20
    # Held out by stretches of time instead: the hosts were all seen, so the
    # threshold is lower.
    timed = trained[0] / "time.model"
    run_bin("train", "--data", data, "--model", timed, "--hold-out", "time")
    t = json.loads(timed.read_text())
    assert "held out by time in 5 folds" in t["training"]["calibration"], t["training"]
    assert t["threshold"] < m["threshold"]


def _rfc3339(us):
    import datetime
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_scanner_and_its_target_are_flagged_with_the_reasons(trained, tmp_path):
    d, _, (model, _) = trained
    attack = tmp_path / "attack.pcap"
    run_bin("generate-capture", attack, "--hosts", "24", "--minutes", "10", "--seed", "11")
    out = tmp_path / "scored"
    s = replay(attack, out, "--model", model)
    flagged = query(f"select entity, summary, evidence from {table(out, 'alerts')} where rule = 'site'")
    by_entity = {e: (summary, json.loads(ev)) for e, summary, ev in flagged}
    # generate.rs: 10.1.0.250 scans ports 1-300 of the first server, 10.1.1.10:
    # the scanner is flagged, and the two score above every other entity.
    assert "10.1.0.250" in by_entity, flagged
    top = query(f"select entity from {table(out, 'scores')} group by entity order by max(score) desc limit 2")
    assert {e for e, in top} == {"10.1.0.250", "10.1.1.10"}, top
    summary, ev = by_entity["10.1.0.250"]
    assert ev["score"] > ev["threshold"]
    assert "tcp_syn_out" in ev and ev["tcp_syn_out.train_median"] < ev["tcp_syn_out"], ev
    assert "unlike the training windows of model site" in summary
    # Every feature row has its score, over SQL as well.
    (feature_rows,), = query(f"select count(*) from {table(out, 'features')}")
    r = run_bin("sql", "--data", out, "--format", "csv",
                "select count(*), count(distinct model), min(threshold) = max(threshold) from scores")
    assert r.stdout.split()[-1] == f"{feature_rows},1,true", r.stdout
    assert s["alerts"] >= 2


def test_ordinary_days_stay_near_the_false_positive_rate(trained, tmp_path):
    """Two other ordinary half-hours of the office (other seeds): windows above
    the threshold at about the model's rate (0.1 %; the threshold is set on
    hosts held out of the fit, so new days sit near it)."""
    _, _, (model, _) = trained
    rates = []
    for seed in (5, 9):
        cap = tmp_path / f"day{seed}.pcap"
        run_bin("generate-capture", cap, "--hosts", "24", "--minutes", "30", "--seed", str(seed), "--no-scan")
        out = tmp_path / f"day{seed}"
        replay(cap, out, "--model", model)
        (above, n), = query(f"select count(*) filter (where score > threshold), count(*) "
                            f"from {table(out, 'scores')}")
        rates.append(above / n)
    assert max(rates) <= 0.002, rates


def test_files_it_cannot_use_are_refused_with_the_reason(trained, tmp_path):
    d, _, (model, _) = trained
    cap = d / "normal.pcap"
    m = json.loads(model.read_text())
    cases = {
        "truncated": (model.read_text()[:1000], "not a model file (not JSON"),
        "other-catalogue": (json.dumps({**m, "features": [{**m["features"][0], "name": "renamed"}, *m["features"][1:]]}),
                            "another feature catalogue"),
        "names-another": (json.dumps({**m, "catalogue_sha256": "0" * 64}), "not the catalogue it names"),
        "other-smartcore": (json.dumps({**m, "smartcore": "0.3.2"}), "smartcore 0.3.2"),
        "newer": (json.dumps({**m, "version": 2}), "format version 2"),
        "corrupt": (json.dumps({**m, "centroids": [[1.0]]}), "corrupt model file"),
    }
    for name, (text, why) in cases.items():
        bad = tmp_path / f"{name}.model"
        bad.write_text(text)
        r = run_bin("replay", cap, "--out", tmp_path / name, "--no-progress", "--model", bad, check=False)
        assert r.returncode != 0 and why in r.stderr, (name, r.stderr)
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'[[models]]\nname = "site"\npath = "{bad}"\n')
        r = run_bin("validate", "--config", cfg, check=False)
        assert r.returncode != 0 and why in r.stderr, (name, r.stderr)
    # A model may not take a built-in detection's name.
    cfg = tmp_path / "builtin-name.toml"
    cfg.write_text(f'[[models]]\nname = "vertical_scan"\npath = "{model}"\n')
    r = run_bin("replay", cap, "--out", tmp_path / "bn", "--no-progress", "--config", cfg, check=False)
    assert r.returncode != 0 and "built-in detection" in r.stderr, r.stderr
    r = run_bin("validate", "--config", cfg, check=False)
    assert r.returncode != 0 and "built-in detection" in r.stderr, r.stderr
    # A feature list that is not the catalogue the file names, and a zero scale.
    m = json.loads(model.read_text())
    swapped = {**m, "features": [m["features"][1], m["features"][0], *m["features"][2:]]}
    zero = {**m, "features": [{**m["features"][0], "scaling": {**m["features"][0]["scaling"], "scale": 0.0}},
                              *m["features"][1:]]}
    for name, doc, why in (("swapped", swapped, "another feature catalogue"), ("zero", zero, "scale must be above 0")):
        bad = tmp_path / f"{name}.model"
        bad.write_text(json.dumps(doc))
        r = run_bin("replay", cap, "--out", tmp_path / name, "--no-progress", "--model", bad, check=False)
        assert r.returncode != 0 and why in r.stderr, (name, r.stderr)


def test_the_long_running_job_scores_live_and_takes_a_new_model_file(trained, tmp_path):
    """The job with `[[models]]` and a webhook (Python's http.server), fed
    loghub's OpenSSH log over TCP syslog: rows are scored as their windows
    close, anomalies reach the receiver and the alerts table. The model file
    is then replaced (a model trained with another false-positive rate, so
    another threshold) while the rest of the log arrives: the job reads it
    again without a restart, and later rows carry the new threshold."""
    import os
    import shutil
    from conftest import DATA, wait_until
    from livejob import Job, free_port, syslog_source
    from test_webhook import Receiver, webhook_toml
    d, data, (strict, _) = trained
    # The log's hosts are of a kind the office model never saw: a model set
    # at 5 % first (brute-forcers score above it), the 0.1 % one after.
    model = d / "loose.model"
    if not model.exists():
        run_bin("train", "--data", data, "--model", model, "--fpr", "0.05")
    other = strict
    thresholds = {json.loads(p.read_text())["threshold"] for p in (model, other)}
    assert len(thresholds) == 2
    live = tmp_path / "live.model"
    shutil.copy(model, live)
    lines = (DATA / "syslog" / "loghub" / "OpenSSH_2k.log").read_bytes().splitlines(keepends=True)
    # Up to 08:00 first, the rest in chunks after the model file is replaced.
    cut = next(i for i, l in enumerate(lines) if l[7:9] >= b"08")
    hport, sport = free_port(), free_port()
    receiver = Receiver(hport)
    models_toml = f'[[models]]\nname = "site"\npath = "{live}"\nseverity = "high"\n'
    try:
        with Job(tmp_path, syslog_source(sport), models_toml + webhook_toml(hport, tmp_path)) as job:
            conn = socket.create_connection(("127.0.0.1", sport))
            conn.sendall(b"".join(lines[:cut]))
            job.wait_metric("amoskys_model_scores_total", 1)
            wait_until(lambda: any(json.loads(b)["rule"] == "site" for _, b in receiver.accepted()),
                       60, "an anomaly alert at the receiver")
            tmp = live.with_suffix(".tmp")
            shutil.copy(other, tmp)
            os.replace(tmp, live)
            rest = iter(range(cut, len(lines), 40))

            def fed_until_reloaded():
                i = next(rest, None)
                if i is not None:
                    conn.sendall(b"".join(lines[i:i + 40]))
                return job.metric_or_0("amoskys_model_reloads_total") >= 1
            wait_until(fed_until_reloaded, 60, "the job to read the new model file", interval=0.3)
            for i in rest:
                conn.sendall(b"".join(lines[i:i + 40]))
            conn.close()
            job.wait_metric("amoskys_events_sent_total", len(lines))
        got = {t for (t,) in query(f"select distinct threshold from {job.table('scores')}")}
        assert got == thresholds, got
        site = job.alert_rows("rule, severity, entity", "rule = 'site'")
        assert site and all(s == "high" for _, s, _ in site), site
        delivered = [json.loads(b) for _, b in receiver.accepted()]
        assert {a["id"] for a in delivered if a["rule"] == "site"} == \
            {i for (i,) in query(f"select id from {job.table('alerts', 'rule = ' + chr(39) + 'site' + chr(39))}")}
    finally:
        receiver.close()


def test_labelled_windows_train_a_classifier_whose_alerts_name_the_class(tmp_path):
    """`train --labels`: half an hour of the office with its scan, the
    scanner's windows labelled `scan`. On another day with the scan, the
    scanner is said to look like a scan (`lab.scan`), and no other host is;
    malformed label files are refused with the line at fault."""
    day = tmp_path / "day.pcap"
    run_bin("generate-capture", day, "--hosts", "24", "--minutes", "30", "--seed", "11")
    data = tmp_path / "day"
    replay(day, data)
    labels = tmp_path / "labels.csv"
    labels.write_text("entity,from,to,label\n# the sample office's scanner\n"
                      "10.1.0.250,2024-01-01T00:00:00Z,2030-01-01T00:00:00Z,scan\n")
    model = tmp_path / "lab.model"
    r = run_bin("train", "--data", data, "--model", model, "--labels", labels)
    assert "classifier of 2 classes: normal" in r.stderr, r.stderr
    m = json.loads(model.read_text())
    assert m["classifier"]["classes"] == ["normal", "scan"]
    (scanner_rows,), = query(f"select count(*) from {table(data, 'features')} where entity = '10.1.0.250'")
    assert m["classifier"]["rows"][1] == scanner_rows
    # The model of normal leaves the labelled windows out.
    assert m["training"]["rows"] + scanner_rows == query(f"select count(*) from {table(data, 'features')}")[0][0]
    other = tmp_path / "other.pcap"
    run_bin("generate-capture", other, "--hosts", "24", "--minutes", "10", "--seed", "13")
    out = tmp_path / "scored"
    replay(other, out, "--model", model)
    classed = query(f"select entity, summary from {table(out, 'alerts')} where rule = 'lab.scan'")
    assert [e for e, _ in classed] == ["10.1.0.250"], classed
    assert "looks like scan to model lab" in classed[0][1]
    for text, why in (("entity,label\n", "header"),
                      ("entity,from,to,label\n10.0.0.1,yesterday,2030-01-01T00:00:00Z,scan\n", ":2:"),
                      ("entity,from,to,label\n10.0.0.1,2024-01-01T00:00:00Z,2030-01-01T00:00:00Z,normal\n", "not \"normal\""),
                      ("entity,from,to,label\n10.0.0.1,2024-01-01T00:00:00Z\n", "expected 4 fields"),
                      ("entity,from,to,label\n10.0.0.1,2030-01-01T00:00:00Z,2024-01-01T00:00:00Z,scan\n",
                       "from must be before to")):
        labels.write_text(text)
        r = run_bin("train", "--data", data, "--model", tmp_path / "bad.model", "--labels", labels, check=False)
        assert r.returncode != 0 and why in r.stderr, (text, r.stderr)
