"""The one small interface every time-series store implements."""

from __future__ import annotations

from typing import Protocol

from ingest.records import Batch, DeadLetter, StoredDose, StoredReading


class Store(Protocol):
    """Durable storage of readings, doses and dead letters.

    `write` returns only once the batch is durable (on disk, or accepted by the server,
    or spooled to local disk): ingest acknowledges MQTT messages after it returns. Writing
    the same reading again (same device and reading id) must not store it twice.
    """

    def write(self, batch: Batch) -> None: ...

    def readings(
        self, patient_id: str, start: float | None = None, end: float | None = None, analyte: str | None = None
    ) -> list[StoredReading]:
        """Readings of a patient with start <= measured_at <= end (s since epoch), in time order."""
        ...

    def doses(self, patient_id: str, start: float | None = None, end: float | None = None) -> list[StoredDose]: ...

    def dead_letters(self, device_id: str | None = None, limit: int = 1000) -> list[DeadLetter]: ...

    def close(self) -> None: ...
