"""MQTT topic names of the v1 wire contract.

Topics carry the *device* identity and never a patient identity: a device does not know
whom it is attached to, and a topic name leaks to every broker log. Ingest resolves the
patient from the enrollment registry at the reading's measurement time.

    mipd/v1/dev/{device_id}/reading   device -> ingest   QoS 1
    mipd/v1/dev/{device_id}/dose      device -> ingest   QoS 1
    mipd/v1/dev/{device_id}/status    device -> all      QoS 1, retained, Last Will "offline"
    mipd/v1/dev/{device_id}/error     ingest -> device   QoS 1, why a message was rejected
    mipd/v1/dev/{device_id}/schedule  service -> device  QoS 1, retained, when to take the next sample
    mipd/v1/team/{team}/alert         service -> care team QoS 1, dose-adjustment alerts

An alert names a patient only by the service's pseudonymous patient id, in the payload;
the broker's ACL lets a care team read its own team's topic only.
"""

from __future__ import annotations

import enum
import functools
import re
from typing import NamedTuple

TOPIC_ROOT = "mipd/v1/dev"
TEAM_ROOT = "mipd/v1/team"
SERVICE_ROOT = "mipd/v1/svc"  # the service's own workers among themselves; no device reads or writes here
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_DEVICE_ID = re.compile(rf"^{DEVICE_ID_PATTERN}$")


class TopicKind(str, enum.Enum):
    READING = "reading"
    DOSE = "dose"
    STATUS = "status"
    ERROR = "error"
    SCHEDULE = "schedule"


class DeviceTopic(NamedTuple):
    device_id: str
    kind: TopicKind


def valid_device_id(device_id: str) -> bool:
    return bool(_DEVICE_ID.match(device_id))


def device_topic(device_id: str, kind: TopicKind | str) -> str:
    """The topic a device publishes `kind` messages on (or receives its errors on)."""
    if not valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}: must match {DEVICE_ID_PATTERN}")
    return f"{TOPIC_ROOT}/{device_id}/{TopicKind(kind).value}"


def subscription(kind: TopicKind | str) -> str:
    """The wildcard filter that matches `kind` messages of every device."""
    return f"{TOPIC_ROOT}/+/{TopicKind(kind).value}"


def parse_topic(topic: str) -> DeviceTopic | None:
    """Split a topic into (device id, kind); None when it is not a v1 device topic."""
    # Ingest parses every message's topic and devices repeat theirs, so valid-length topics
    # are cached; longer ones (never valid) are not, so a sender cannot fill the cache.
    return _parse_topic_cached(topic) if len(topic) <= _LONGEST_TOPIC else _parse_topic(topic)


_LONGEST_TOPIC = len(TOPIC_ROOT) + 1 + 64 + 1 + max(len(kind.value) for kind in TopicKind)


@functools.lru_cache(maxsize=1 << 16)
def _parse_topic_cached(topic: str) -> DeviceTopic | None:
    return _parse_topic(topic)


def _parse_topic(topic: str) -> DeviceTopic | None:
    prefix = TOPIC_ROOT + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix):].split("/")
    if len(parts) != 2 or not valid_device_id(parts[0]):
        return None
    try:
        return DeviceTopic(parts[0], TopicKind(parts[1]))
    except ValueError:
        return None


def team_alert_topic(team: str) -> str:
    """The topic a care team's consumers read alerts from."""
    if not valid_device_id(team):
        raise ValueError(f"invalid team id {team!r}: must match {DEVICE_ID_PATTERN}")
    return f"{TEAM_ROOT}/{team}/alert"
