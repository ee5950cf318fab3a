"""MQTT subscriptions against a real mosquitto broker on loopback, started and
stopped here; messages published with mosquitto_pub; the `events` table read
with DuckDB."""
import subprocess
import time

import pytest

from conftest import wait_until
from livejob import Job, free_port, make_pki, need, summary_counter


class Broker:
    """mosquitto on a free port, with persistence so that sessions and queued
    messages survive a restart."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path / "mosquitto"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        import getpass
        # Running as root, mosquitto would switch to user "mosquitto", who may not
        # write the persistence file here: stay whoever runs the tests.
        self.conf.write_text(f"""user {getpass.getuser()}
listener {self.port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {self.dir}/
autosave_interval 1
max_queued_messages 0
max_inflight_messages 0
log_dest file {self.dir}/mosquitto.log
""")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([need("mosquitto"), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run([need("mosquitto_pub"), "-p", str(self.port), "-t", "probe/up",
                                           "-m", "1"], capture_output=True, timeout=10).returncode == 0,
                   15, lambda: "mosquitto to start: " + (self.dir / "mosquitto.log").read_text(),
                   interval=0.1)
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)

    def publish(self, topic, *messages, qos=1):
        """Publishes each message (str or bytes) on `topic` in one mosquitto_pub run."""
        if all(isinstance(m, str) and "\n" not in m for m in messages):
            data = "".join(m + "\n" for m in messages).encode()
            r = subprocess.run([need("mosquitto_pub"), "-p", str(self.port), "-q", str(qos),
                                "-t", topic, "-l"], input=data, capture_output=True, timeout=120)
            assert r.returncode == 0, r.stderr
        else:
            for m in messages:
                r = subprocess.run([need("mosquitto_pub"), "-p", str(self.port), "-q", str(qos),
                                    "-t", topic, "-s"], input=m if isinstance(m, bytes) else m.encode(),
                                   capture_output=True, timeout=30)
                assert r.returncode == 0, r.stderr


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    if b.proc.poll() is None:
        b.stop()


def mqtt_source(broker, protocol="3.1.1", client_id="amoskys-test", qos=1):
    return f"""
[[sources.mqtt]]
name = "iot"
broker = "mqtt://127.0.0.1:{broker.port}"
topics = ["sensors/#"]
device_pattern = "sensors/{{device}}/{{metric}}"
qos = {qos}
protocol = "{protocol}"
client_id = "{client_id}"
reconnect_min = "100ms"
reconnect_max = "1s"
"""


def subscribed(job, broker, n_before=0):
    """Publishes probes until the job has received one: then its subscription is live."""
    deadline = time.time() + 30
    while time.time() < deadline:
        broker.publish("sensors/probe/ready", "1")
        try:
            return job.wait_metric("amoskys_component_received_events_total", n_before + 1,
                                   timeout=1, component_id="iot")
        except AssertionError:
            continue
    raise AssertionError("the MQTT source never received a probe")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_messages_land_in_events_with_topic_device_metric_value(tmp_path, broker, protocol):
    with Job(tmp_path, mqtt_source(broker, protocol, client_id=f"t-{protocol}")) as job:
        subscribed(job, broker)
        broker.publish("sensors/dev1/temp", "21.5", "22.25")
        broker.publish("sensors/dev2/env", '{"t": 19.5, "h": {"rel": 40}, "state": "on"}')
        broker.publish("sensors/dev3/blob", b"\x00\xff\x10binary")
        broker.publish("other/ignored", "5")
        job.wait_metric("amoskys_component_received_events_total", 5, component_id="iot")
    ev = job.table("events", "source_kind = 'mqtt' and entity <> 'probe'")
    rows = job.rows(f"select entity, topic, metric, value, payload_bytes, protocol from {ev} "
                    f"order by entity, metric, value")
    want_proto = "mqtt3.1.1" if protocol == "3.1.1" else "mqtt5"
    assert rows == [
        ("dev1", "sensors/dev1/temp", "temp", 21.5, 4, want_proto),
        ("dev1", "sensors/dev1/temp", "temp", 22.25, 5, want_proto),
        ("dev2", "sensors/dev2/env", "env.h.rel", 40.0, 44, want_proto),
        ("dev2", "sensors/dev2/env", "env.t", 19.5, 44, want_proto),
        ("dev3", "sensors/dev3/blob", None, None, 9, want_proto),
    ], rows
    assert summary_counter(job.summary, "iot", "opaque") == 1


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_qos1_messages_sent_while_stopped_arrive_after_restart(tmp_path, broker, protocol):
    src = mqtt_source(broker, protocol, client_id=f"persist-{protocol}")
    # First run: creates the persistent session and its subscription.
    with Job(tmp_path, src, name="first") as job:
        subscribed(job, broker)
    n = 500
    broker.publish("sensors/dev9/seq", *[str(i) for i in range(n)])
    with Job(tmp_path, src, name="second") as job:
        job.wait_metric("amoskys_component_received_events_total", n, component_id="iot")
    got = job.rows(f"select distinct value from {job.table('events', 'entity = $$dev9$$')}")
    assert sorted(int(v) for (v,) in got) == list(range(n))


def test_broker_restart_mid_stream_loses_nothing_at_qos1(tmp_path, broker):
    with Job(tmp_path, mqtt_source(broker, client_id="restart")) as job:
        subscribed(job, broker)
        broker.publish("sensors/dev5/seq", *[str(i) for i in range(300)])
        job.wait_metric("amoskys_mqtt_connected", 1, component_id="iot")
        broker.stop()
        # The job has seen the broker go away before it comes back.
        wait_until(lambda: job.metric("amoskys_mqtt_connected", component_id="iot") == 0, 30,
                   "the MQTT source to notice the broker stopped", interval=0.2)
        broker.start()
        broker.publish("sensors/dev5/seq", *[str(i) for i in range(300, 600)])
        job.wait_metric("amoskys_component_received_events_total", 600, timeout=90,
                        component_id="iot")
        assert job.metric("amoskys_component_errors_total", component_id="iot") >= 1
    got = job.rows(f"select distinct value from {job.table('events', 'entity = $$dev5$$')}")
    assert sorted(int(v) for (v,) in got) == list(range(600))


def test_mqtt_features_per_device(tmp_path, broker):
    """The MQTT family of the features table, against the messages sent."""
    with Job(tmp_path, mqtt_source(broker, client_id="feat"),
             extra_toml='[window]\nlateness = "0s"\nidle_timeout = "1s"') as job:
        subscribed(job, broker)
        broker.publish("sensors/dev7/a", "1", "2", "3")
        broker.publish("sensors/dev7/b", '{"x": 10}')
        job.wait_metric("amoskys_component_received_events_total", 5, component_id="iot")
    f = job.table("features", "entity = 'dev7'")
    rows = job.rows(f"select sum(mqtt_messages), sum(mqtt_bytes), max(mqtt_distinct_topics), "
                    f"min(mqtt_value_min), max(mqtt_value_max), sum(mqtt_values), "
                    f"count(packets_out) from {f}")
    # Each message counts in the two windows that hold it.
    assert rows == [(8.0, 2 * (1 + 1 + 1 + 9), 2.0, 1.0, 10.0, 8.0, 0)], rows
    # Publish-interval regularity, per window, from the messages' times in events.
    ts = [r[0] for r in job.rows(f"select epoch_us(ts) from {job.table('events', 'entity = $$dev7$$')} order by 1")]
    windows = job.rows(f"select epoch_us(window_start), mqtt_interval_mean, mqtt_interval_cv from {f}")
    for start, mean, cv in windows:
        inside = [t for t in ts if start <= t < start + 60_000_000]
        gaps = [(b - a) / 1e6 for a, b in zip(inside, inside[1:])]
        if not gaps:
            assert mean is None and cv is None
            continue
        m = sum(gaps) / len(gaps)
        sd = (sum((g - m) ** 2 for g in gaps) / len(gaps)) ** 0.5
        assert abs(mean - m) <= 1e-9 * max(1.0, m), (start, mean, m)
        assert (cv is None and m == 0) or abs(cv - sd / m) <= 1e-6 * max(1.0, sd / m), (start, cv, sd / m)


def test_tls_with_client_certificate_and_password(tmp_path, monkeypatch):
    """mosquitto with TLS, required client certificates and a password file: the
    source connects with its certificate and password; a source with a wrong
    password is refused, counted, and receives nothing."""
    import getpass
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    passwd = tmp_path / "passwd"
    subprocess.run([need("mosquitto_passwd"), "-b", "-c", str(passwd), "pipeline", "s3cret-pass"],
                   check=True, capture_output=True, timeout=30)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f"""user {getpass.getuser()}
listener {port} 127.0.0.1
cafile {pki / 'ca.pem'}
certfile {pki / 'server.pem'}
keyfile {pki / 'server.key'}
require_certificate true
allow_anonymous false
password_file {passwd}
""")
    broker = subprocess.Popen([need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    tls_pub = [need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "--cafile", str(pki / "ca.pem"),
               "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"),
               "-u", "pipeline", "-P", "s3cret-pass", "-q", "1"]
    try:
        wait_until(lambda: subprocess.run(tls_pub + ["-t", "probe/up", "-m", "1"],
                                          capture_output=True).returncode == 0,
                   15, "the TLS broker to start", interval=0.2)
        monkeypatch.setenv("AMOSKYS_TEST_MQTT_PASSWORD", "s3cret-pass")
        common = f"""broker = "mqtts://127.0.0.1:{port}"
topics = ["sensors/#"]
device_pattern = "sensors/{{device}}/{{metric}}"
ca_file = "{pki / 'ca.pem'}"
client_cert = "{pki / 'client.pem'}"
client_key = "{pki / 'client.key'}"
username = "pipeline"
reconnect_min = "100ms"
reconnect_max = "500ms"
"""
        src = f"""
[[sources.mqtt]]
name = "iot"
client_id = "tls-good"
password_env = "AMOSKYS_TEST_MQTT_PASSWORD"
{common}
[[sources.mqtt]]
name = "wrong"
client_id = "tls-wrong"
password = "not-the-password"
{common}
"""
        with Job(tmp_path, src) as job:
            def probed():
                # Probes until one arrives: then the subscription is live.
                if job.metric("amoskys_component_received_events_total", component_id="iot") >= 1:
                    return True
                subprocess.run(tls_pub + ["-t", "sensors/probe/ready", "-m", "1"], capture_output=True)
                return False

            wait_until(probed, 30, "the TLS source to receive a probe", interval=0.3)
            n0 = job.metric("amoskys_component_received_events_total", component_id="iot")
            r = subprocess.run(tls_pub + ["-t", "sensors/secure1/temp", "-m", "36.6"], capture_output=True)
            assert r.returncode == 0, r.stderr
            job.wait_metric("amoskys_component_received_events_total", n0 + 1, component_id="iot")
            job.wait_metric("amoskys_component_errors_total", 1, component_id="wrong",
                            error_type="connection_errors")
        rows = job.rows(f"select source, entity, metric, value from {job.table('events', 'entity = $$secure1$$')}")
        assert rows == [("iot", "secure1", "temp", 36.6)]
        assert summary_counter(job.summary, "wrong", "received") == 0
        assert summary_counter(job.summary, "wrong", "connects") == 0
    finally:
        broker.terminate()
        broker.wait(timeout=15)


def test_a_device_on_a_new_topic_or_out_of_its_learned_range_alerts(broker, tmp_path):
    """mqtt_new_topic and mqtt_value_out_of_range with a 3 s learning span: what a
    device does while learning is its normal; after it, a topic it never used and
    a value outside its range (widened by half its width) alert, once each."""
    extra = """
[detections.mqtt_new_topic]
learning_minutes = 0.05
[detections.mqtt_value_out_of_range]
learning_minutes = 0.05
min_samples = 10
"""
    with Job(tmp_path, mqtt_source(broker), extra) as job:
        n0 = subscribed(job, broker)
        broker.publish("sensors/dev1/temp", *[str(20 + i % 6) for i in range(30)])
        broker.publish("sensors/dev1/hum", "40")
        job.wait_metric("amoskys_events_sent_total", n0 + 31)
        # Must be a sleep: the 3 s learning span runs on the messages' arrival
        # times, so that much wall-clock time has to pass; no counter shows it.
        time.sleep(3.5)
        broker.publish("sensors/dev1/temp", "22", "27.4", "17.6")
        broker.publish("sensors/dev1/temp", "80", "81")
        broker.publish("sensors/dev1/cmd", "1", "1")
        # A device first heard now is still learning: nothing it does alerts.
        broker.publish("sensors/dev2/temp", "500", "-500")
        broker.publish("sensors/dev2/other", "1")
        job.wait_metric("amoskys_events_sent_total", n0 + 31 + 10)
        job.wait_metric("amoskys_alerts_total", 2)
    rows = sorted(job.rows(f"select rule, entity, summary, evidence from {job.table('alerts')}"))
    assert [r[:3] for r in rows] == [
        ("mqtt_new_topic", "dev1", "dev1 published on a new topic sensors/dev1/cmd (it had used 2)"),
        ("mqtt_value_out_of_range", "dev1", "dev1 temp = 80, outside its learned range [20, 25]"),
    ], rows
    import json
    assert json.loads(rows[1][3]) == {"value": 80, "learned_min": 20, "learned_max": 25,
                                      "learned_samples": 30}


def test_a_device_flooding_the_broker_raises_mqtt_flood(broker, tmp_path):
    """7,000 messages about one device within a minute (over 100 a second over
    the window); a device publishing 20 stays quiet."""
    with Job(tmp_path, mqtt_source(broker)) as job:
        n0 = subscribed(job, broker)
        broker.publish("sensors/noisy/temp", *[str(i % 50) for i in range(7000)])
        broker.publish("sensors/calm/temp", *[str(i) for i in range(20)])
        job.wait_metric("amoskys_events_sent_total", n0 + 7020)
    rows = job.rows(f"select rule, entity, summary from {job.table('alerts')} where rule = 'mqtt_flood'")
    assert [(r[0], r[1]) for r in rows] == [("mqtt_flood", "noisy")], rows
