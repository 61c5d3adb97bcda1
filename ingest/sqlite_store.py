"""The embedded store: one SQLite file in WAL mode, `synchronous=FULL`.

Deduplication is the primary key (device_id, reading_id): a QoS 1 redelivery is an
`INSERT OR IGNORE` that changes nothing. Readers get their own connection per thread,
so the API can query while ingest writes.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ingest.records import Batch, DeadLetter, StoredDose, StoredReading

SCHEMA = """
CREATE TABLE IF NOT EXISTS reading (
    device_id TEXT NOT NULL, reading_id TEXT NOT NULL, seq INTEGER NOT NULL,
    patient_id TEXT NOT NULL, analyte TEXT NOT NULL, value REAL NOT NULL, unit TEXT NOT NULL,
    measured_at REAL NOT NULL, received_at REAL NOT NULL, bloq INTEGER NOT NULL,
    original_value REAL, original_unit TEXT,
    PRIMARY KEY (device_id, reading_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reading_by_patient ON reading (patient_id, measured_at);
CREATE TABLE IF NOT EXISTS dose (
    device_id TEXT NOT NULL, dose_id TEXT NOT NULL, seq INTEGER NOT NULL,
    patient_id TEXT NOT NULL, drug TEXT NOT NULL, amount_mg REAL NOT NULL, route TEXT NOT NULL,
    given_at REAL NOT NULL, received_at REAL NOT NULL, duration_s REAL, status TEXT NOT NULL,
    scheduled_at REAL,
    PRIMARY KEY (device_id, dose_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dose_by_patient ON dose (patient_id, given_at);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL, topic TEXT NOT NULL, device_id TEXT, reason TEXT NOT NULL,
    detail TEXT NOT NULL, payload BLOB NOT NULL, element INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_by_device ON dead_letter (device_id, received_at);
"""

READING_COLUMNS = (
    "patient_id, device_id, reading_id, seq, analyte, value, unit, measured_at, received_at, bloq, "
    "original_value, original_unit"
)
DOSE_COLUMNS = (
    "patient_id, device_id, dose_id, seq, drug, amount_mg, route, given_at, received_at, duration_s, status, "
    "scheduled_at"
)


# Readings from many devices land all over the primary key and the patient index, so one
# 1,000-reading commit dirties ~1,000 pages: at SQLite's default (a checkpoint once the WAL
# holds 1,000 pages) nearly every commit also checkpointed, copying each hot page back into the
# database file again and again. At 10,000 pages (40 MiB at 4 KiB pages; the file reaches ~50)
# a hot page is copied about once per ten commits: 28-33 instead of 31-40 us of CPU per stored
# reading (35.0 -> 27.8 in a paired run; docs/BENCHMARKS.md). The WAL is fsynced at every
# commit either way, so durability does not change.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    return connection


def _range(column: str, start: float | None, end: float | None) -> tuple[str, list[float]]:
    clauses, args = [], []
    if start is not None:
        clauses.append(f"{column} >= ?")
        args.append(start)
    if end is not None:
        clauses.append(f"{column} <= ?")
        args.append(end)
    return "".join(f" AND {c}" for c in clauses), args


class SqliteStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = connect(self.path)
        self._writer.executescript(SCHEMA)
        self._write_lock = threading.Lock()
        self._local = threading.local()

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = connect(self.path)
        return connection

    def write(self, batch: Batch) -> None:
        with self._write_lock:
            cursor = self._writer.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                # The records' fields are in column order (ingest/records.py): rows as they are.
                cursor.executemany(
                    f"INSERT OR IGNORE INTO reading ({READING_COLUMNS}) VALUES ({','.join('?' * 12)})", batch.readings
                )
                cursor.executemany(
                    f"INSERT OR IGNORE INTO dose ({DOSE_COLUMNS}) VALUES ({','.join('?' * 12)})", batch.doses
                )
                cursor.executemany(
                    "INSERT INTO dead_letter (received_at, topic, device_id, reason, detail, payload, element)"
                    " VALUES (?,?,?,?,?,?,?)",
                    batch.dead_letters,
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise

    def readings(
        self, patient_id: str, start: float | None = None, end: float | None = None, analyte: str | None = None
    ) -> list[StoredReading]:
        where, args = _range("measured_at", start, end)
        if analyte is not None:
            where += " AND analyte = ?"
            args.append(analyte)
        rows = self._reader().execute(
            f"SELECT {READING_COLUMNS} FROM reading WHERE patient_id = ?{where} ORDER BY measured_at, seq",
            [patient_id, *args],
        )
        return [
            StoredReading(p, dev, rid, seq, an, v, u, m, rcv, bool(bl), ov, ou)
            for (p, dev, rid, seq, an, v, u, m, rcv, bl, ov, ou) in rows
        ]

    def doses(self, patient_id: str, start: float | None = None, end: float | None = None) -> list[StoredDose]:
        where, args = _range("given_at", start, end)
        rows = self._reader().execute(
            f"SELECT {DOSE_COLUMNS} FROM dose WHERE patient_id = ?{where} ORDER BY given_at, seq", [patient_id, *args]
        )
        return [StoredDose(*row) for row in rows]

    def dead_letters(self, device_id: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        where, args = ("WHERE device_id = ?", [device_id]) if device_id is not None else ("", [])
        rows = self._reader().execute(
            "SELECT received_at, topic, device_id, reason, detail, payload, element FROM dead_letter "
            f"{where} ORDER BY id LIMIT ?",
            [*args, limit],
        )
        return [DeadLetter(*row) for row in rows]

    def count_readings(self) -> int:
        return self._reader().execute("SELECT count(*) FROM reading").fetchone()[0]

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
