"""Per capture folder: how the replay's flows agree with tshark, and its packet and
byte totals with capinfos. Prints a Markdown table.

    .venv/bin/python benches/compare/flow_agreement.py [--bin target/release/amoskys-pipeline]
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import conftest  # noqa: E402
from conftest import CONFORMANCE_FOLDERS, capinfos, captures, has_table, query, table, tshark_packets  # noqa: E402
from test_replay_conformance import is_tunnel, tshark_tcp_conversations  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None)
    args = ap.parse_args()
    if args.bin:
        conftest.BIN = Path(args.bin).resolve()
    print("| folder | captures | packets = capinfos | bytes = capinfos | flow records (TCP) | tshark TCP conversations | Community IDs (ours / tshark / shared) |")
    print("|---|---|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())
    for folder in CONFORMANCE_FOLDERS:
        caps = captures(folder)
        pk_ok = by_ok = 0
        ours_tcp = conv = 0
        cid_ours = cid_theirs = cid_shared = 0
        for i, cap in enumerate(caps):
            out = tmp / f"{folder}-{i}"
            s = conftest.replay(cap, out)
            ci = capinfos(cap)
            pk_ok += s["packets"] == ci[0]
            by_ok += s["bytes"] == ci[1]
            tsh = tshark_packets(cap)
            if any(is_tunnel(p) for p in tsh):
                continue
            theirs = {p["communityid"] for p in tsh if p.get("communityid")}
            ours = set()
            if has_table(out, "flows"):
                ours = {r[0] for r in query(f"select distinct community_id from {table(out, 'flows')}")}
                ours_tcp += query(f"select count(*) from {table(out, 'flows')} where proto = 6")[0][0]
            conv += tshark_tcp_conversations(cap)
            cid_ours += len(ours)
            cid_theirs += len(theirs)
            cid_shared += len(ours & theirs)
        print(f"| {folder} | {len(caps)} | {pk_ok}/{len(caps)} | {by_ok}/{len(caps)} | {ours_tcp} | {conv} | "
              f"{cid_ours} / {cid_theirs} / {cid_shared} |")


if __name__ == "__main__":
    main()
