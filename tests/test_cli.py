"""The command line: inputs as directories and globs, late packets, configuration
errors, help."""
import shutil
import struct
import subprocess

from conftest import DATA, ROOT, query, replay, run_bin, table


def rows(out, name):
    return query(f"select * exclude (date, hour) from {table(out, name)} order by all")


def test_a_directory_of_rotated_captures_replays_as_one_stream(tmp_path):
    src = DATA / "pcap" / "zeek" / "ssh" / "ssh.pcap"
    if not src.exists():
        src = DATA / "pcap" / "zeek" / "http-bro.org.pcap"
    parts = tmp_path / "ring"
    parts.mkdir()
    # editcap splits into files of 200 packets each, named in time order; shuffle
    # the names so that only the packets' own timestamps can order them.
    subprocess.run(["editcap", "-c", "200", str(src), str(parts / "chunk.pcap")], check=True,
                   capture_output=True)
    files = sorted(parts.iterdir())
    assert len(files) > 2
    for i, f in enumerate(reversed(files)):
        f.rename(parts / f"z{i:02d}-{f.name}")
    whole = replay(src, tmp_path / "whole")
    split = replay(parts, tmp_path / "split")
    assert split["files"] == len(files)
    assert split["packets"] == whole["packets"]
    assert rows(tmp_path / "split", "flows") == rows(tmp_path / "whole", "flows")
    assert rows(tmp_path / "split", "features") == rows(tmp_path / "whole", "features")
    globbed = replay(str(parts / "z*.pcap"), tmp_path / "glob")
    assert globbed["files"] == len(files)
    assert rows(tmp_path / "glob", "flows") == rows(tmp_path / "whole", "flows")


def udp_frame(src_last, dst_last, payload=b"x" * 10):
    ip_len = 20 + 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, src_last]), bytes([10, 0, 0, dst_last]))
    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + payload


def write_pcap(path, packets):
    """packets: [(seconds, frame)] written as a classic little-endian pcap."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in packets:
            f.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)), len(frame), len(frame)))
            f.write(frame)


def test_packets_behind_the_watermark_are_counted_as_late(tmp_path):
    t0 = 1_700_000_000
    pkts = [(t0 + i, udp_frame(1, 2)) for i in range(0, 200, 5)]
    # 120 s behind the newest packet so far: older than newest - lateness (10 s),
    # and in a pane the watermark has left.
    pkts.insert(30, (t0 + 25, udp_frame(3, 4)))
    pkts.insert(35, (t0 + 170, udp_frame(1, 2)))  # slightly out of order: within lateness
    cap = tmp_path / "late.pcap"
    write_pcap(cap, pkts)
    out = tmp_path / "out"
    s = replay(cap, out)
    assert s["packets"] == len(pkts)
    assert s["late"] == 1
    (n,), = query(f"select sum(packets_fwd + packets_bwd) from {table(out, 'flows')}")
    assert n == len(pkts) - 1
    assert query(f"select count(*) from {table(out, 'features')} where entity = '10.0.0.3'")[0][0] == 0


def test_validate_reports_file_line_and_reason(tmp_path):
    good = tmp_path / "good.toml"
    shutil.copy(ROOT / "examples" / "flows.toml", good)
    ok = run_bin("validate", "--config", good)
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[flows]\nidle_timeout = \"2m\"\nmax_flowz = 10\n")
    r = run_bin("validate", "--config", bad, check=False)
    assert r.returncode == 1
    assert f"{bad}:3:1" in r.stderr and "unknown field `max_flowz`" in r.stderr
    bad.write_text("[runtime]\nworkers = -3\n")
    r = run_bin("validate", "--config", bad, check=False)
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "out of range" in r.stderr
    r = run_bin("replay", DATA / "pcap" / "esnet", "--out", tmp_path / "o", "--config", bad,
                check=False)
    assert r.returncode == 2 and "out of range" in r.stderr


def test_missing_inputs_are_clear_errors(tmp_path):
    r = run_bin("replay", tmp_path / "nope.pcap", "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "nope.pcap" in r.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    r = run_bin("replay", junk, "--out", tmp_path / "o2", "--no-progress", check=False)
    assert r.returncode == 2
    assert "junk.pcap" in r.stderr and "no capture could be read" in r.stderr


def test_every_subcommand_has_help():
    for cmd in ([], ["replay"], ["validate"], ["generate-capture"]):
        r = run_bin(*cmd, "--help")
        assert "Usage:" in r.stdout
    assert "hive" in run_bin("replay", "--help").stdout.lower() or "date=" in run_bin("replay", "--help").stdout
