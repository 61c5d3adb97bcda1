"""Which device is attached to which patient, and when.

Enrollment is a time interval: device D measures patient P from `valid_from` until
`valid_to` (open when None). A sensor moved from one patient to the next keeps its id;
ingest resolves the patient at the reading's *measurement* time, so a late upload from
the previous wearer still lands on the right patient.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ingest.broker_auth import BrokerUser, check_user
from ingest.sqlite_store import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS device (
    device_id TEXT PRIMARY KEY, kind TEXT NOT NULL, vendor TEXT, registered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollment (
    device_id TEXT NOT NULL REFERENCES device(device_id), patient_id TEXT NOT NULL,
    valid_from REAL NOT NULL, valid_to REAL,
    PRIMARY KEY (device_id, valid_from)
);
CREATE TABLE IF NOT EXISTS broker_user (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, team TEXT, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_status (
    device_id TEXT PRIMARY KEY, state TEXT NOT NULL, reported_at REAL, received_at REAL NOT NULL,
    battery REAL, firmware TEXT
);
"""


class UnknownDevice(LookupError):
    pass


class NotEnrolled(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Enrollment:
    device_id: str
    patient_id: str
    valid_from: float
    valid_to: float | None = None


@dataclass(frozen=True, slots=True)
class Roster:
    """An immutable copy of the registered devices and their enrollments.

    Ingest takes one per batch: resolving a patient is then a dictionary lookup and a
    bisection, with no SQLite round trip per message.
    """

    devices: frozenset[str] = frozenset()
    intervals: dict[str, list[Enrollment]] = field(default_factory=dict)
    """Per device, its enrollments in order of ``valid_from``."""

    def patient_at(self, device_id: str, t: float) -> str:
        """The patient wearing `device_id` at time `t`; raises UnknownDevice or NotEnrolled."""
        if device_id not in self.devices:
            raise UnknownDevice(device_id)
        intervals = self.intervals.get(device_id, [])
        i = bisect.bisect_right(intervals, t, key=lambda e: e.valid_from) - 1
        if i >= 0 and (intervals[i].valid_to is None or t < intervals[i].valid_to):
            return intervals[i].patient_id
        raise NotEnrolled(device_id)


class Registry:
    """Devices and enrollments in a SQLite file; lookups served from an in-memory `Roster`
    that is reloaded whenever another connection has committed a change."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(self.path)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._roster = Roster()

    def register_device(self, device_id: str, kind: str, vendor: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO device (device_id, kind, vendor, registered_at) VALUES (?,?,?,?) "
                "ON CONFLICT(device_id) DO UPDATE SET kind = excluded.kind, vendor = excluded.vendor",
                (device_id, kind, vendor, time.time()),
            )
            self._version = None

    def enroll(self, device_id: str, patient_id: str, valid_from: float, valid_to: float | None = None) -> Enrollment:
        """Attach a registered device to a patient; an open enrollment of the device is closed at `valid_from`."""
        if valid_to is not None and valid_to <= valid_from:
            raise ValueError("valid_to must be after valid_from")
        with self._lock:
            if self._db.execute("SELECT 1 FROM device WHERE device_id = ?", (device_id,)).fetchone() is None:
                raise UnknownDevice(device_id)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE enrollment SET valid_to = ? WHERE device_id = ? AND valid_to IS NULL AND valid_from < ?",
                (valid_from, device_id, valid_from),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO enrollment (device_id, patient_id, valid_from, valid_to) VALUES (?,?,?,?)",
                (device_id, patient_id, valid_from, valid_to),
            )
            self._db.execute("COMMIT")
            self._version = None
        return Enrollment(device_id, patient_id, valid_from, valid_to)

    def enrollments(self, patient_id: str | None = None) -> list[Enrollment]:
        every = [e for intervals in self.roster().intervals.values() for e in intervals]
        return [e for e in every if patient_id is None or e.patient_id == patient_id]

    def kind(self, device_id: str) -> str | None:
        """The registered kind of a device (e.g. ``poc-meter``), None if unknown."""
        with self._lock:
            row = self._db.execute("SELECT kind FROM device WHERE device_id = ?", (device_id,)).fetchone()
        return row[0] if row else None

    def devices(self) -> set[str]:
        return set(self.roster().devices)

    def patient_at(self, device_id: str, t: float) -> str:
        """The patient wearing `device_id` at time `t`; raises UnknownDevice or NotEnrolled."""
        return self.roster().patient_at(device_id, t)

    def record_status(self, device_id: str, state: str, reported_at: float | None, received_at: float,
                      battery: float | None = None, firmware: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO device_status VALUES (?,?,?,?,?,?)",
                (device_id, state, reported_at, received_at, battery, firmware),
            )

    def status(self, device_id: str) -> tuple[str, float] | None:
        row = self._db.execute("SELECT state, received_at FROM device_status WHERE device_id = ?", (device_id,)).fetchone()
        return tuple(row) if row else None

    def add_broker_user(self, user: BrokerUser) -> None:
        check_user(user)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO broker_user VALUES (?, ?, ?, ?, ?)",
                (user.username, user.role, user.password_hash, user.team, time.time()),
            )

    def broker_users(self) -> list[BrokerUser]:
        rows = self._db.execute("SELECT username, role, password_hash, team FROM broker_user ORDER BY username")
        return [BrokerUser(*row) for row in rows]

    def roster(self) -> Roster:
        """The devices and enrollments as committed now (by any connection to the file)."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                devices = frozenset(row[0] for row in self._db.execute("SELECT device_id FROM device"))
                intervals: dict[str, list[Enrollment]] = {}
                for row in self._db.execute(
                    "SELECT device_id, patient_id, valid_from, valid_to FROM enrollment ORDER BY device_id, valid_from"
                ):
                    intervals.setdefault(row[0], []).append(Enrollment(*row))
                self._roster = Roster(devices, intervals)
                self._version = version
            return self._roster

    def close(self) -> None:
        with self._lock:
            self._db.close()


