"""The audit log as a hash chain: every record carries the SHA-256 of its predecessor, so a
record changed, removed or slipped in behind the service's back breaks the chain at that point.

Record ``n``'s hash is ``SHA-256(canonical(record n))``, where the record holds every stored
column of the row (``seq``, ``at``, ``actor``, ``role``, ``team``, ``action``, ``patient_id``,
``resource``, ``recommendation_hash``, ``detail`` as its stored JSON text, and, for a decision,
the ``model_hash``, ``data_hash`` and ``seed`` of the recommendation decided on) plus
``prev_hash``, the hash of record ``n - 1`` (:data:`GENESIS`, 64 zeros, for the first) and
``chained`` (:data:`AT_WRITE`, or :data:`AT_MIGRATION` for rows written before the chain).

The canonical serialisation is JSON with keys sorted, no whitespace (separators ``,`` and
``:``), non-ASCII characters as themselves, encoded as UTF-8; numbers as Python's ``json``
writes them (floats in their shortest round-trip form, which is JavaScript's too for these
values; NaN and infinities are refused). :func:`canonical` is the one definition.

Appending reads the head and inserts the successor in one ``BEGIN IMMEDIATE`` transaction, so
writers in several threads or processes (the scale-out mode shares one SQLite file) queue on
the database's write lock instead of forking the chain; a unique index on ``prev_hash`` makes a
fork impossible even for a writer that skipped the transaction.

The chain shows that the log is what it was when its head was seen: someone who can write the
file can still rebuild the whole chain after an edit. Anchoring the head elsewhere
(``GET /api/v1/audit/head``, ``mipd audit verify --anchor SEQ:HASH``) closes that gap.

Rows of a database created before the chain are chained at the first open, oldest first, and
marked :data:`AT_MIGRATION`: from then on any change to them is caught, while what they held
before the migration rests on the append-only triggers alone (the mark says so to an auditor).
Leaving them unchained would keep them editable without trace for ever.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

GENESIS = "0" * 64
AT_WRITE = "at-write"
AT_MIGRATION = "at-migration"

TABLE = """CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, team TEXT,
    action TEXT NOT NULL, patient_id TEXT, resource TEXT NOT NULL, recommendation_hash TEXT, detail TEXT NOT NULL,
    model_hash TEXT, data_hash TEXT, seed INTEGER, chained TEXT, prev_hash TEXT, hash TEXT
)"""
# Columns that a table created before the chain lacks (name, declaration).
CHAIN_COLUMNS = (("model_hash", "TEXT"), ("data_hash", "TEXT"), ("seed", "INTEGER"), ("chained", "TEXT"),
                 ("prev_hash", "TEXT"), ("hash", "TEXT"))
NO_UPDATE = ("CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
             "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
NO_DELETE = ("CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
             "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
ONE_SUCCESSOR = "CREATE UNIQUE INDEX IF NOT EXISTS audit_one_successor ON audit (prev_hash)"

# The hashed fields, in the order of the SELECTs below (``hash`` itself last, not hashed).
FIELDS = ("seq", "at", "actor", "role", "team", "action", "patient_id", "resource", "recommendation_hash", "detail",
          "model_hash", "data_hash", "seed", "chained", "prev_hash")
SELECT_ROWS = f"SELECT {', '.join(FIELDS)}, hash FROM audit"
INT64_MAX = 2**63 - 1


class DecisionInputs(NamedTuple):
    """What the decided recommendation was computed from (``dosing_policy.provenance``)."""

    model_hash: str | None = None
    data_hash: str | None = None
    seed: int | None = None


class NewRecord(NamedTuple):
    """An audit record before the chain gives it its place (``seq``) and predecessor."""

    at: float
    actor: str
    role: str
    team: str | None
    action: str
    patient_id: str | None
    resource: str
    recommendation_hash: str | None
    detail: str  # JSON text, stored and hashed as it is
    inputs: DecisionInputs = DecisionInputs()


class ChainHead(NamedTuple):
    seq: int  # 0: no record yet
    hash: str  # GENESIS: no record yet
    count: int


@dataclass(frozen=True)
class BrokenLink:
    seq: int  # the first row at which the chain does not hold
    what: str


@dataclass(frozen=True)
class Verification:
    head: ChainHead
    broken: BrokenLink | None
    migrated: tuple[int, int, int] | None  # (first seq, last seq, count) chained at migration

    @property
    def ok(self) -> bool:
        return self.broken is None


def canonical(record: dict[str, Any]) -> bytes:
    """JSON, keys sorted, no whitespace, UTF-8 (see the module docstring)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical form of ``record`` (the :data:`FIELDS`, ``prev_hash`` included)."""
    return hashlib.sha256(canonical({name: record[name] for name in FIELDS})).hexdigest()


def decision_inputs(details: dict[str, Any]) -> DecisionInputs:
    """The model hash, data hash and seed of a recommendation's ``details["provenance"]``."""
    provenance = details.get("provenance") if isinstance(details, dict) else None
    if not isinstance(provenance, dict):
        return DecisionInputs()
    seed = provenance.get("seed")
    return DecisionInputs(provenance.get("model_hash"), provenance.get("data_hash"),
                          int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None)


# -- writing ---------------------------------------------------------------------------------

def prepare(connection: sqlite3.Connection) -> None:
    """Create the table (or add the chain's columns to an older one), the triggers and the
    one-successor index, and chain rows written before the chain; one transaction, so that
    workers opening the file together do it once."""
    with _immediate(connection):
        connection.execute(TABLE)
        present = {row[1] for row in connection.execute("PRAGMA table_info(audit)")}
        for name, declaration in CHAIN_COLUMNS:
            if name not in present:
                connection.execute(f"ALTER TABLE audit ADD COLUMN {name} {declaration}")
        connection.execute(NO_UPDATE)
        connection.execute(NO_DELETE)
        connection.execute(ONE_SUCCESSOR)
        _chain_unchained(connection)


def append(connection: sqlite3.Connection, new: NewRecord) -> tuple[int, str]:
    """Append ``new`` after the current head; returns its (seq, hash)."""
    with _immediate(connection):
        seq, prev = _next_place(connection)
        seed = new.inputs.seed
        record = dict(zip(FIELDS, (
            seq, new.at, new.actor, new.role, new.team, new.action, new.patient_id, new.resource, new.recommendation_hash,
            new.detail, new.inputs.model_hash, new.inputs.data_hash,
            seed if seed is None or abs(seed) <= INT64_MAX else str(seed), AT_WRITE, prev,
        )))
        digest = record_hash(record)
        connection.execute(f"INSERT INTO audit ({', '.join(FIELDS)}, hash) VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
                           (*record.values(), digest))
    return seq, digest


def _next_place(connection: sqlite3.Connection) -> tuple[int, str]:
    """(seq, prev_hash) of the next record. The seq continues the table's AUTOINCREMENT counter,
    so rows removed from the end leave a gap that :func:`verify` reports."""
    head = connection.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if head is not None and head[1] is None:  # a writer of the pre-chain code appended: chain its rows first
        _chain_unchained(connection)
        head = connection.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    counter = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    last = max(head[0] if head else 0, counter[0] if counter else 0)
    return last + 1, head[1] if head else GENESIS


def _chain_unchained(connection: sqlite3.Connection) -> None:
    """Give rows without a hash their place in the chain, oldest first, marked AT_MIGRATION.
    Runs inside the caller's transaction; the UPDATE trigger is lifted only within it."""
    rows = connection.execute(f"{SELECT_ROWS} WHERE hash IS NULL ORDER BY seq").fetchall()
    if not rows:
        return
    before = connection.execute("SELECT hash FROM audit WHERE hash IS NOT NULL AND seq < ? ORDER BY seq DESC LIMIT 1",
                                (rows[0][0],)).fetchone()
    prev = before[0] if before else GENESIS
    connection.execute("DROP TRIGGER IF EXISTS audit_no_update")
    for row in rows:
        record = dict(zip(FIELDS, row))
        record.update(chained=AT_MIGRATION, prev_hash=prev)
        prev = record_hash(record)
        connection.execute("UPDATE audit SET chained = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                           (AT_MIGRATION, record["prev_hash"], prev, record["seq"]))
    connection.execute(NO_UPDATE)


class _immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection:
    the write lock is taken before the head is read."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, traceback) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


# -- reading ---------------------------------------------------------------------------------

def head(connection: sqlite3.Connection) -> ChainHead:
    """The last record's seq and hash and the number of records (one read transaction)."""
    connection.execute("BEGIN")
    try:
        last = connection.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        count = connection.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    finally:
        connection.execute("COMMIT")
    return ChainHead(0, GENESIS, 0) if last is None else ChainHead(last[0], last[1] or "", count)


def _rows(connection: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    for row in connection.execute(f"{SELECT_ROWS} ORDER BY seq"):
        yield dict(zip((*FIELDS, "hash"), row))


def _broken(row: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """Why ``row`` does not continue the chain after ``previous`` (None: it does)."""
    seq = row["seq"]
    if row["hash"] is None:
        return f"row {seq} has no hash: it was written outside the chain"
    content = record_hash(row)
    if content != row["hash"]:
        return (f"row {seq} does not match its hash (stored {row['hash']}, its content hashes to {content}): "
                "the row was changed after it was written")
    expected, before = (GENESIS, "the start of the chain") if previous is None else (
        previous["hash"], f"row {previous['seq']}, the row before it")
    if row["prev_hash"] == expected:
        return None
    after = previous["seq"] if previous is not None else 0
    if seq > after + 1:
        missing = f"row {after + 1}" if seq == after + 2 else f"rows {after + 1}-{seq - 1}"
        return f"row {seq} names predecessor {row['prev_hash']}, not the hash of {before} ({expected}): {missing} removed"
    return (f"row {seq} names predecessor {row['prev_hash']}, not the hash of {before} ({expected}): "
            f"{'the row before it was changed and rehashed, or ' if previous is not None else ''}row {seq} was forged")


def verify(connection: sqlite3.Connection, anchor: tuple[int, str] | None = None) -> Verification:
    """Walk the chain from the first record; report the first link that does not hold. An
    ``anchor`` (seq, hash) seen earlier must still be in the chain, with that hash."""
    connection.execute("BEGIN")
    try:
        broken, previous, count, migrated, anchored = None, None, 0, [], anchor is None
        for row in _rows(connection):
            count += 1
            why = _broken(row, previous)
            if why is not None:
                broken = BrokenLink(row["seq"], why)
                break
            if row["chained"] == AT_MIGRATION:
                migrated.append(row["seq"])
            if anchor is not None and row["seq"] == anchor[0]:
                anchored = row["hash"] == anchor[1]
                if not anchored:
                    broken = BrokenLink(row["seq"], f"row {row['seq']} has hash {row['hash']}, not the anchored {anchor[1]}")
                    break
            previous = row
        if broken is None and not anchored:
            broken = BrokenLink(anchor[0], f"the anchored row {anchor[0]} is not in the chain (it ends at row "
                                           f"{previous['seq'] if previous else 0}): rows were removed from the end")
        if broken is None:
            broken = _tail_removed(connection, previous)
        last = ChainHead(0, GENESIS, 0) if previous is None else ChainHead(previous["seq"], previous["hash"], count)
    finally:
        connection.execute("COMMIT")
    return Verification(last, broken, (migrated[0], migrated[-1], len(migrated)) if migrated else None)


def _tail_removed(connection: sqlite3.Connection, last: dict[str, Any] | None) -> BrokenLink | None:
    """Rows removed from the end leave the AUTOINCREMENT counter ahead of the last row."""
    counter = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    end = last["seq"] if last else 0
    if counter is None or counter[0] <= end:
        return None
    return BrokenLink(end + 1, f"rows {end + 1}-{counter[0]} were written (the sequence counter is at {counter[0]}) "
                               f"but the chain ends at row {end}: rows were removed from the end")
