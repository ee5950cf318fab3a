"""The notebooks of notebooks/, executed headless (nbclient, a fresh Python
kernel) over outputs the pipeline writes here: the sample office's ordinary
half-hour (replay, export-training, train) and a ten-minute day with its port
scan replayed with the model, beside a log of its gateway's sshd refusing the
scanner's passwords (RFC 5424 lines written here), served over Arrow Flight. A failing cell fails
the test; the figures they draw are written under notebooks/out/ (not kept in
the repository)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, run_bin
from test_flight import Server

NOTEBOOKS = ROOT / "notebooks"
FIGURES = NOTEBOOKS / "out"


@pytest.fixture(scope="module")
def outputs(trained, tmp_path_factory):
    d, normal, (model, _) = trained
    t = tmp_path_factory.mktemp("notebooks")
    run_bin("export-training", "--data", normal, "--out", t / "training", "--val-fraction", "0.2")
    attack = t / "attack.pcap"
    run_bin("generate-capture", attack, "--hosts", "24", "--minutes", "10", "--seed", "11")
    # generate.rs starts the office at 2024-01-15 09:00 UTC and the scan at
    # minute 2: twelve refused passwords from the scanner during it.
    log = t / "auth.log"
    log.write_text("".join(
        f"<38>1 2024-01-15T09:02:{5 * k:02d}Z office-gw sshd 4242 - - Failed password for root "
        f"from 10.1.0.250 port {50000 + k} ssh2\n" for k in range(12)))
    scored = t / "scored"
    run_bin("replay", attack, "--out", scored, "--no-progress", "--model", model, "--syslog", log)
    server = Server(scored, token=None)
    try:
        yield {
            "AMOSKYS_NORMAL": str(normal),
            "AMOSKYS_TRAINING": str(t / "training"),
            "AMOSKYS_MODEL": str(model),
            "AMOSKYS_SCORED": str(scored),
            "AMOSKYS_FLIGHT": f"grpc://127.0.0.1:{server.port}",
            "AMOSKYS_ATTACKER": "10.1.0.250",
        }
    finally:
        server.stop()


@pytest.mark.parametrize("name,figures", [
    ("ml_walkthrough", ["distributions.png", "one_host.png", "roc.png"]),
    ("incident", ["incident.png"]),
])
def test_notebook_runs_and_draws(name, figures, outputs, monkeypatch):
    out = FIGURES / name
    for f in figures:
        (out / f).unlink(missing_ok=True)
    for k, v in {**outputs, "AMOSKYS_FIGURES": str(out), "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    nbformat.write(nb, out / f"{name}.executed.ipynb")
    for f in figures:
        assert (out / f).stat().st_size > 1000, f
