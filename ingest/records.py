"""What ingest stores: readings and doses resolved to a patient, and rejected messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Records are NamedTuples in the order of the store's columns: ingest builds one per message
# (a fifth of a frozen dataclass's cost) and SQLite takes them as parameter rows as they are.


class StoredReading(NamedTuple):
    patient_id: str
    device_id: str
    reading_id: str
    seq: int
    analyte: str
    """LOINC or x-mipd- code."""
    value: float
    """In the analyte's canonical unit `unit`."""
    unit: str
    measured_at: float
    """Device measurement time, s since epoch."""
    received_at: float
    """Ingest receive time, s since epoch."""
    bloq: bool = False
    original_value: float | None = None
    original_unit: str | None = None


class StoredDose(NamedTuple):
    patient_id: str
    device_id: str
    dose_id: str
    seq: int
    drug: str
    amount_mg: float
    route: str
    given_at: float
    """Start of administration, s since epoch."""
    received_at: float
    duration_s: float | None = None
    status: str = "administered"
    scheduled_at: float | None = None


class DeadLetter(NamedTuple):
    received_at: float
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes
    element: int = 0
    """Index of the rejected element within a pack payload."""


@dataclass(slots=True)
class Batch:
    """One durable write: everything decided about a group of MQTT messages."""

    readings: list[StoredReading] = field(default_factory=list)
    doses: list[StoredDose] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.readings) + len(self.doses) + len(self.dead_letters)
