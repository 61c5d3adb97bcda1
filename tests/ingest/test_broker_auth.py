"""Broker authentication and ACLs generated from the registry, enforced by a real Mosquitto."""

import json
import threading
import time

import pytest

from ingest.broker_auth import BrokerUser, hash_password, new_password, write_broker_files
from ingest.mqtt import connect
from ingest.registry import Registry
from tests.conftest import _start_or_skip
from tests.servers import Mosquitto
from ingest.committed import COMMITTED_ROOT
from wire.topics import TEAM_ROOT, TopicKind, device_topic, team_alert_topic


@pytest.fixture
def secured(tmp_path):
    registry = Registry(tmp_path / "registry.sqlite")
    passwords = {}
    for name, role, team in [("dev-a", "device", None), ("dev-b", "device", None), ("svc", "service", None),
                             ("ward-a", "team", "ward-a")]:
        passwords[name] = new_password()
        registry.add_broker_user(BrokerUser(name, role, hash_password(passwords[name]), team))
    passwd, acl = write_broker_files(registry.broker_users(), tmp_path / "broker")
    (tmp_path / "mosquitto").mkdir()
    broker = _start_or_skip(lambda: Mosquitto(
        tmp_path / "mosquitto", anonymous=False, extra_config=f"password_file {passwd}\nacl_file {acl}\n"
    ))
    yield broker, passwords
    broker.stop()
    registry.close()


def url(broker, user, password):
    return broker.url.replace("mqtt://", f"mqtt://{user}:{password}@")


def received_by(client, subscriptions, publisher, publications):
    """Topics `client` receives after subscribing to `subscriptions` while `publisher` sends
    `publications` in order (the last one a sentinel the client may read)."""
    got, sentinel = [], threading.Event()

    def on_message(c, userdata, message):
        got.append(message.topic)
        if message.topic == publications[-1]:
            sentinel.set()

    client.on_message = on_message
    for topic in subscriptions:
        client.subscribe(topic, 1)
    time.sleep(0.3)
    for topic in publications:
        publisher.publish(topic, b"{}", qos=1).wait_for_publish(5)
    assert sentinel.wait(5), got
    time.sleep(0.2)
    return got


def test_mosquitto_accepts_our_password_hashes_and_refuses_others(secured):
    broker, passwords = secured
    client, _ = connect(url(broker, "dev-a", passwords["dev-a"]), "dev-a", protocol="5")
    client.disconnect()
    with pytest.raises(ConnectionError):
        connect(broker.url, "anonymous", protocol="5", timeout=3)
    with pytest.raises(ConnectionError):
        connect(url(broker, "dev-a", "not-the-password"), "dev-a", protocol="5", timeout=3)


def test_a_device_publishes_only_as_itself(secured):
    broker, passwords = secured
    received = []
    service, _ = connect(url(broker, "svc", passwords["svc"]), "svc", protocol="5",
                         subscriptions=[("mipd/v1/dev/+/reading", 1)], on_message=lambda c, u, m: received.append(m.topic))
    device, _ = connect(url(broker, "dev-a", passwords["dev-a"]), "dev-a", protocol="5")
    body = json.dumps({"id": "r1", "seq": 1, "t": time.time(), "n": "20578-1", "u": "mg/L", "v": 10.0})
    try:  # forged; Mosquitto 2 may answer an unauthorised QoS 1 publish by closing the connection
        device.publish(device_topic("dev-b", TopicKind.READING), body, qos=1).wait_for_publish(5)
    except RuntimeError:
        pass
    time.sleep(0.3)
    if not device.is_connected():
        device.loop_stop()
        device, _ = connect(url(broker, "dev-a", passwords["dev-a"]), "dev-a-again", protocol="5")
    device.publish(device_topic("dev-a", TopicKind.READING), body, qos=1).wait_for_publish(5)
    deadline = time.time() + 5
    while not received and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    # Same publisher, ordered delivery: had the forged message passed, it would be here first.
    assert received == [device_topic("dev-a", TopicKind.READING)]
    # Mosquitto grants the SUBSCRIBE but never delivers what the ACL does not let it read.
    own_error, other_error = device_topic("dev-a", TopicKind.ERROR), device_topic("dev-b", TopicKind.ERROR)
    got = received_by(device, [other_error, "mipd/v1/dev/+/error", own_error], service, [other_error, own_error])
    assert set(got) == {own_error}
    # the same for sample requests: a meter reads its own schedule only
    own, other = device_topic("dev-a", TopicKind.SCHEDULE), device_topic("dev-b", TopicKind.SCHEDULE)
    got = received_by(device, [other, "mipd/v1/dev/+/schedule", own], service, [other, own])
    assert set(got) == {own}
    for client in (device, service):
        client.disconnect()


def test_a_care_team_reads_only_its_own_alerts(secured):
    broker, passwords = secured
    team, _ = connect(url(broker, "ward-a", passwords["ward-a"]), "ward-a", protocol="5")
    service, _ = connect(url(broker, "svc", passwords["svc"]), "svc-alerts", protocol="5")
    got = received_by(team, [team_alert_topic("ward-b"), "mipd/v1/#", team_alert_topic("ward-a")], service,
                      [team_alert_topic("ward-b"), device_topic("dev-a", TopicKind.ERROR), team_alert_topic("ward-a")])
    assert set(got) == {team_alert_topic("ward-a")}  # overlapping filters may deliver it twice
    service.disconnect()
    team.disconnect()


def test_scaled_out_workers_talk_on_service_topics_that_devices_cannot_read(secured):
    """Ingest workers announce committed batches to assimilation workers, and the API follows the
    alert topics, all as the service user; a device sees none of it (it carries patient ids)."""
    broker, passwords = secured
    worker, _ = connect(url(broker, "svc", passwords["svc"]), "svc-worker", protocol="5")
    ingest_worker, _ = connect(url(broker, "svc", passwords["svc"]), "svc-ingest", protocol="5")
    device, _ = connect(url(broker, "dev-a", passwords["dev-a"]), "dev-a", protocol="5")
    committed, alert = f"{COMMITTED_ROOT}/17", team_alert_topic("ward-a")
    got = received_by(device, [f"{COMMITTED_ROOT}/#", "mipd/v1/#", device_topic("dev-a", TopicKind.ERROR)], ingest_worker,
                      [committed, alert, device_topic("dev-a", TopicKind.ERROR)])
    assert set(got) == {device_topic("dev-a", TopicKind.ERROR)}
    got = received_by(worker, [f"{COMMITTED_ROOT}/#", f"{TEAM_ROOT}/+/alert"], ingest_worker, [committed, alert])
    assert set(got) == {committed, alert}
    for client in (worker, ingest_worker, device):
        client.disconnect()


def test_hash_format_matches_mosquitto_passwd():
    # `mosquitto_passwd` stores $7$<iterations>$<base64 salt>$<base64 sha512 digest>
    value = hash_password("secret", salt=b"0123456789ab")
    kind, iterations, salt, digest = value.split("$")[1:]
    assert (kind, iterations, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi")
    assert len(digest) == 88  # 64 bytes, base64
