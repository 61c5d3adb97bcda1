"""Committed-event notifications: how scaled-out assimilation workers learn what ingest stored.

After an ingest worker commits a batch (and before it acknowledges the devices' messages),
it publishes the batch's readings and doses, grouped by patient bucket, at QoS 1 on
``mipd/v1/svc/committed/{bucket}`` and waits for the broker's PUBACKs. A patient's bucket
is a stable hash of the patient id into ``BUCKETS`` buckets; assimilation worker ``i`` of
``n`` owns the buckets ``b`` with ``b % n == i``, hence the patients with
``shard_of(patient_id, n) == i``.

Loss analysis: a crash before the PUBACKs means the device messages were not acknowledged,
so they are redelivered, re-committed (a no-op) and re-notified. A worker that was down
misses notifications but restores its patients from checkpoints plus the store, which has
every committed event; duplicates are dropped by the patient timelines.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from ingest.records import Batch, StoredDose, StoredReading
from wire.topics import SERVICE_ROOT

COMMITTED_ROOT = f"{SERVICE_ROOT}/committed"
BUCKETS = 256


def bucket_of(patient_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(patient_id.encode(), digest_size=8).digest(), "little") % BUCKETS


def shard_of(patient_id: str, shard_count: int) -> int:
    return bucket_of(patient_id) % shard_count


def committed_topic(bucket: int) -> str:
    return f"{COMMITTED_ROOT}/{bucket}"


def shard_subscriptions(shard_index: int, shard_count: int) -> list[tuple[str, int]]:
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard index {shard_index} is not in 0..{shard_count - 1}")
    return [(committed_topic(b), 1) for b in range(BUCKETS) if b % shard_count == shard_index]


def encode(batch: Batch) -> list[tuple[str, bytes]]:
    """(topic, payload) per bucket touched by the batch's readings and doses."""
    groups: dict[int, dict[str, list]] = defaultdict(lambda: {"readings": [], "doses": []})
    for reading in batch.readings:
        groups[bucket_of(reading.patient_id)]["readings"].append(reading._asdict())
    for dose in batch.doses:
        groups[bucket_of(dose.patient_id)]["doses"].append(dose._asdict())
    return [(committed_topic(b), json.dumps(body, separators=(",", ":")).encode()) for b, body in sorted(groups.items())]


def decode(payload: bytes) -> Batch:
    body = json.loads(payload)
    return Batch([StoredReading(**r) for r in body["readings"]], [StoredDose(**d) for d in body["doses"]])
