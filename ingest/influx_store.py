"""InfluxDB through the v1 HTTP API (`/write` line protocol, `/query` InfluxQL).

That API is the one every InfluxDB generation serves: 1.x natively, 2.x and 3.x through
their v1 compatibility endpoints (with a DBRP mapping on 2.x; auth by token header).

Durability: a batch is POSTed synchronously. When InfluxDB is unreachable or answers 5xx,
the batch's lines go to an on-disk spool (written, fsynced, renamed) and the write counts
as durable; a drainer thread replays the spool, oldest first, once InfluxDB is back. A
point is identified by measurement + tags + time, so a replayed or redelivered reading
overwrites itself instead of being stored twice.

Schema: measurement `reading` (tags patient_id, device_id, analyte; time = measurement
time), `dose` (tags patient_id, device_id, drug; time = administration start) and
`dead_letter` (tags device_id, reason; time = receive time + element index in ns).
Patient id is a tag (queries select by patient); reading and dose ids are fields, never
tags, so series cardinality stays at patients x devices x analytes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import urllib3

from ingest.line_protocol import dead_letter_line, dose_line, ns, reading_line
from ingest.records import Batch, DeadLetter, StoredDose, StoredReading

log = logging.getLogger(__name__)


class InfluxError(RuntimeError):
    pass


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)  # JSON gives 10 for the float 10.0


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Spool:
    """Batches of line protocol waiting on local disk for InfluxDB to come back.

    Every write asks whether a backlog is waiting, so the count of waiting files is kept in
    memory; the drainer recounts the directory once per pass (`refresh`), because the
    processes of a scaled-out deployment may share it and spool or drain files of each other.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._waiting = len(self.files())

    def append(self, lines: list[str]) -> Path:
        with self._lock:
            name = f"{time.time_ns():020d}.lp"
            tmp = self.directory / (name + ".tmp")
            with open(tmp, "wb") as f:
                f.write("\n".join(lines).encode())
                f.flush()
                os.fsync(f.fileno())
            path = self.directory / name
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._waiting += 1
            return path

    def done(self, path: Path, *, refused: bool = False) -> None:
        """A spooled batch was written (deleted) or refused by InfluxDB (kept aside as .refused)."""
        with self._lock:
            try:
                if refused:
                    os.replace(path, path.with_suffix(".refused"))
                else:
                    path.unlink()
            except FileNotFoundError:  # another process sharing the directory got there first
                pass
            self._waiting = max(self._waiting - 1, 0)

    def refresh(self) -> int:
        """Recount the waiting files on disk; returns the count."""
        with self._lock:
            self._waiting = len(self.files())
            return self._waiting

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.lp"))

    def __len__(self) -> int:
        return self._waiting


class InfluxStore:
    def __init__(
        self,
        url: str,
        database: str,
        spool_dir: Path | str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        retention_policy: str | None = None,
        timeout_s: float = 10.0,
        create_database: bool = True,
        drain_interval_s: float = 1.0,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self._auth = {"u": username, "p": password} if username else {}
        self._headers = {"Authorization": f"Token {token}"} if token else {}
        self._http = urllib3.PoolManager(
            maxsize=4, timeout=urllib3.Timeout(connect=2.0, read=timeout_s), retries=False
        )
        self.spool = Spool(Path(spool_dir))
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._drain_interval_s = drain_interval_s
        if create_database:
            try:
                self._query(f'CREATE DATABASE "{database}"', method="POST")
            except (InfluxError, urllib3.exceptions.HTTPError) as err:
                log.warning("could not create database %s (%s); assuming it exists", database, err)
        self._drainer = threading.Thread(target=self._drain_forever, name="influx-spool", daemon=True)
        self._drainer.start()

    # -- writing -----------------------------------------------------------------
    def _post(self, lines: list[str]) -> None:
        params = {"db": self.database, "precision": "ns", **self._auth}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        response = self._http.request(
            "POST", f"{self.url}/write?{urlencode(params)}", body="\n".join(lines).encode(), headers=self._headers
        )
        if response.status == 204:
            return
        message = response.data.decode(errors="replace")[:500]
        if 400 <= response.status < 500:
            # A 4xx will not succeed on retry (bad line, type conflict): keep it for inspection.
            raise InfluxError(f"InfluxDB refused the write ({response.status}): {message}")
        raise urllib3.exceptions.HTTPError(f"InfluxDB answered {response.status}: {message}")

    def write(self, batch: Batch) -> None:
        lines = [reading_line(r) for r in batch.readings]
        lines += [dose_line(d) for d in batch.doses]
        lines += [dead_letter_line(d) for d in batch.dead_letters]
        self.write_lines(lines)

    def write_lines(self, lines: list[str]) -> None:
        """Durably write line protocol (to InfluxDB, or to the spool while it is away)."""
        if not lines:
            return
        with self._write_lock:
            if len(self.spool):  # keep going to disk until the backlog is drained
                self.spool.append(lines)
                return
            try:
                self._post(lines)
            except (urllib3.exceptions.HTTPError, OSError) as err:
                log.warning("InfluxDB unreachable (%s); spooling %d lines to %s", err, len(lines), self.spool.directory)
                self.spool.append(lines)

    def drain(self) -> int:
        """Replay spooled batches, oldest first; returns how many files were written."""
        written = 0
        for path in self.spool.files():
            lines = path.read_text().split("\n")
            try:
                self._post(lines)
            except InfluxError as err:
                log.error("spooled batch %s refused by InfluxDB: %s; moved aside", path.name, err)
                self.spool.done(path, refused=True)
                continue
            except (urllib3.exceptions.HTTPError, OSError):
                break
            self.spool.done(path)
            written += 1
        return written

    def _drain_forever(self) -> None:
        while not self._stop.wait(self._drain_interval_s):
            if self.spool.refresh():
                with self._write_lock:
                    self.drain()

    # -- querying ----------------------------------------------------------------
    def _query(self, q: str, method: str = "GET") -> list[dict]:
        params = {"q": q, "db": self.database, "epoch": "ns", **self._auth}
        if method == "POST":
            response = self._http.request(
                "POST", f"{self.url}/query", body=urlencode(params).encode(),
                headers={**self._headers, "Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            response = self._http.request("GET", f"{self.url}/query?{urlencode(params)}", headers=self._headers)
        if response.status != 200:
            raise InfluxError(f"InfluxDB query failed ({response.status}): {response.data[:300]!r}")
        document = json.loads(response.data)
        rows: list[dict] = []
        for result in document.get("results", []):
            if "error" in result:
                raise InfluxError(result["error"])
            for series in result.get("series", []):
                columns = series["columns"]
                rows.extend(dict(zip(columns, values)) for values in series["values"])
        return rows

    def _where(self, patient_id: str, start: float | None, end: float | None) -> str:
        where = f'"patient_id" = {_quote(patient_id)}'
        if start is not None:
            where += f" AND time >= {ns(start)}"
        if end is not None:
            where += f" AND time <= {ns(end)}"
        return where

    def readings(
        self, patient_id: str, start: float | None = None, end: float | None = None, analyte: str | None = None
    ) -> list[StoredReading]:
        where = self._where(patient_id, start, end)
        if analyte is not None:
            where += f' AND "analyte" = {_quote(analyte)}'
        rows = self._query(f'SELECT * FROM "reading" WHERE {where} ORDER BY time')
        return [
            StoredReading(
                r["patient_id"], r["device_id"], r["reading_id"], int(r["seq"]), r["analyte"], float(r["value"]), r["unit"],
                r["time"] / 1e9, r["received_at"], bool(r.get("bloq")), _float(r.get("original_value")), r.get("original_unit"),
            )
            for r in rows
        ]

    def doses(self, patient_id: str, start: float | None = None, end: float | None = None) -> list[StoredDose]:
        rows = self._query(f'SELECT * FROM "dose" WHERE {self._where(patient_id, start, end)} ORDER BY time')
        return [
            StoredDose(
                r["patient_id"], r["device_id"], r["dose_id"], int(r["seq"]), r["drug"], float(r["amount_mg"]), r["route"],
                r["time"] / 1e9, r["received_at"], r.get("duration_s"), r["status"], r.get("scheduled_at"),
            )
            for r in rows
        ]

    def dead_letters(self, device_id: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        where = f' WHERE "device_id" = {_quote(device_id)}' if device_id is not None else ""
        rows = self._query(f'SELECT * FROM "dead_letter"{where} ORDER BY time LIMIT {int(limit)}')
        return [
            DeadLetter(
                (r["time"] - int(r["element"])) / 1e9, r["topic"], r["device_id"], r["reason"], r["detail"],
                r["payload"].encode(), int(r["element"]),
            )
            for r in rows
        ]

    def count_readings(self) -> int:
        rows = self._query('SELECT count("value") FROM "reading"')
        return int(rows[0]["count"]) if rows else 0

    def close(self) -> None:
        self._stop.set()
        self._drainer.join(timeout=5)
        with self._write_lock:
            self.drain()
        self._http.clear()
