"""The fuzzer and CVE regression corpus: every file replays without a panic or a
hang, and every packet is read and either decoded or counted by reason."""
import pytest

from conftest import capinfos, captures, classic_pcap_records, replay

CORPUS = captures("tcpdump-malformed")


def test_the_corpus_is_there():
    assert len(CORPUS) > 100


@pytest.mark.parametrize("cap", CORPUS, ids=[c.name for c in CORPUS])
def test_malformed_capture_is_counted_not_fatal(cap, tmp_path):
    # replay() fails the test on a non-zero exit, a panic message, or the timeout.
    s = replay(cap, tmp_path / "out", timeout=60)
    assert s["ip_packets"] + sum(s["skipped"].values()) == s["packets"]
    # Independent counts: the records of a classic pcap file as parsed here, else
    # capinfos (which some link types of this corpus defeat, and which leaves out
    # the pseudo-header of ATM records).
    want = classic_pcap_records(cap) or capinfos(cap)
    assert want is not None, "no independent count for this file"
    if s["file_errors"]:
        # libpcap refused the file or stopped at a broken record: what was read
        # before is counted, and nothing more.
        assert s["packets"] <= want[0]
    else:
        assert (s["packets"], s["bytes"]) == want
