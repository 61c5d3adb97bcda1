"""The audit log's hash chain: intact chains verify; a row edited, rehashed, removed or forged
behind the service's back (raw sqlite3, trigger dropped) is named by ``mipd audit verify``;
rows of a database from before the chain are chained at migration; a decision records what
its recommendation was computed from; concurrent writers (threads, processes) never fork it."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mipdstream.cli import app
from mipdstream.service import audit_log
from mipdstream.service.state_db import AuditEntry, RecommendationRecord, ServiceDB

PROVENANCE = {"model_id": "vancomycin", "model_hash": "ab" * 32, "data_hash": "cd" * 32, "filter_settings": "{}", "seed": 7}


def entry(i: int, **changes) -> AuditEntry:
    values = dict(at=1_765_000_000.25 + i, actor="clin-a", role="clinician", team="team-a", action="read",
                  patient_id=f"p{i % 3}", resource=f"GET /api/v1/patients/p{i % 3}", detail={"n": i, "note": "größe"})
    values.update(changes)
    return AuditEntry(**values)


@pytest.fixture
def db_path(tmp_path) -> Path:
    path = tmp_path / "service.sqlite"
    db = ServiceDB(path)
    for i in range(6):
        db.audit(entry(i))
    db.close()
    return path


def raw(path: Path) -> sqlite3.Connection:
    """The file as someone with write access sees it: no service, triggers dropped."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("DROP TRIGGER IF EXISTS audit_no_update")
    connection.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    return connection


def verify_cli(path: Path, *args: str):
    return CliRunner().invoke(app, ["audit", "verify", "--db", str(path), *args])


def test_an_untouched_chain_verifies_and_each_hash_follows_the_documented_form(db_path):
    result = verify_cli(db_path)
    assert result.exit_code == 0 and "audit chain intact: 6 records, head row 6" in result.output, result.output
    rows = sqlite3.connect(db_path).execute(f"{audit_log.SELECT_ROWS} ORDER BY seq").fetchall()
    previous = "0" * 64
    for row in rows:  # an independent reading of the docstring: sorted-key compact JSON, UTF-8, SHA-256
        record = dict(zip(audit_log.FIELDS, row[:-1]))
        assert record["prev_hash"] == previous and record["chained"] == "at-write"
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == row[-1]
        previous = row[-1]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_an_edited_row_is_named(db_path):
    raw(db_path).execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 4")
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "broken at row 4" in result.output and "changed after it was written" in result.output


def test_an_edited_and_rehashed_row_breaks_the_next_link(db_path):
    connection = raw(db_path)
    connection.execute("UPDATE audit SET detail = '{\"n\": 99}' WHERE seq = 3")
    row = connection.execute(f"{audit_log.SELECT_ROWS} WHERE seq = 3").fetchone()
    connection.execute("UPDATE audit SET hash = ? WHERE seq = 3", (audit_log.record_hash(dict(zip(audit_log.FIELDS, row))),))
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "broken at row 4" in result.output and "not the hash of row 3" in result.output


def test_a_removed_row_is_named(db_path):
    raw(db_path).execute("DELETE FROM audit WHERE seq = 2")
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "broken at row 3" in result.output and "row 2 removed" in result.output


def test_rows_removed_from_the_end_are_caught(db_path):
    head = ServiceDB(db_path).audit_head()
    raw(db_path).execute("DELETE FROM audit WHERE seq >= 5")
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "rows 5-6 were written" in result.output
    connection = raw(db_path)  # the sequence counter put back as well: only an anchor tells
    connection.execute("UPDATE sqlite_sequence SET seq = 4 WHERE name = 'audit'")
    assert verify_cli(db_path).exit_code == 0
    anchored = verify_cli(db_path, "--anchor", f"{head.seq}:{head.hash}")
    assert anchored.exit_code == 1 and "the anchored row 6 is not in the chain" in anchored.output


def test_a_forged_row_with_a_wrong_predecessor_is_named(db_path):
    connection = raw(db_path)
    record = dict(zip(audit_log.FIELDS, (7, 1_765_000_100.0, "intruder", "team-admin", "team-a", "accept-recommendation", "p1",
                                          "POST x", None, "{}", None, None, None, "at-write", "f" * 64)))
    connection.execute(f"INSERT INTO audit ({', '.join(audit_log.FIELDS)}, hash) VALUES ({', '.join('?' * 16)})",
                       (*record.values(), audit_log.record_hash(record)))
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "broken at row 7" in result.output and f"names predecessor {'f' * 64}" in result.output


def test_a_row_inserted_outside_the_chain_is_named(db_path):
    sqlite3.connect(db_path, isolation_level=None).execute(
        "INSERT INTO audit (at, actor, role, action, resource, detail) VALUES (1, 'x', 'clinician', 'read', 'GET /', '{}')")
    result = verify_cli(db_path)
    assert result.exit_code == 1 and "row 7 has no hash" in result.output


def test_an_anchor_that_still_holds_verifies(db_path):
    head = ServiceDB(db_path).audit_head()
    assert verify_cli(db_path, "--anchor", f"{head.seq}:{head.hash}").exit_code == 0
    assert verify_cli(db_path, "--anchor", f"{head.seq}:{'0' * 64}").exit_code == 1
    assert verify_cli(db_path, "--anchor", "six:abc").exit_code == 2  # not SEQ:HASH


LEGACY_SCHEMA = """
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL, team TEXT,
    action TEXT NOT NULL, patient_id TEXT, resource TEXT NOT NULL, recommendation_hash TEXT, detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def test_rows_from_before_the_chain_are_chained_at_migration_and_marked(tmp_path):
    path = tmp_path / "service.sqlite"
    legacy = sqlite3.connect(path, isolation_level=None)
    legacy.executescript(LEGACY_SCHEMA)
    for i in range(4):
        legacy.execute("INSERT INTO audit (at, actor, role, team, action, patient_id, resource, recommendation_hash, detail) "
                       "VALUES (?, 'clin-a', 'clinician', 'team-a', 'read', 'p1', 'GET /x', NULL, ?)", (1.0 + i, json.dumps({"i": i})))
    legacy.close()
    unchained = verify_cli(path)
    assert unchained.exit_code == 1 and "no chain yet" in unchained.output

    db = ServiceDB(path)  # the migration
    db.audit(entry(10))
    assert ServiceDB(path).verify_audit().migrated == (1, 4, 4)  # a second open migrates nothing again
    result = verify_cli(path)
    assert result.exit_code == 0 and "4 records (rows 1-4) were written before the chain" in result.output
    assert "5 records, head row 5" in result.output
    chained = [e.hash for e in reversed(db.audit_log())]
    assert [e.prev_hash for e in reversed(db.audit_log())] == ["0" * 64, *chained[:-1]]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the trigger is back
        sqlite3.connect(path, isolation_level=None).execute("UPDATE audit SET actor = 'x' WHERE seq = 2")
    raw(path).execute("UPDATE audit SET detail = '{\"i\": 9}' WHERE seq = 2")
    assert "broken at row 2" in verify_cli(path).output


def test_a_decision_records_the_model_hash_data_hash_and_seed_of_its_recommendation(tmp_path):
    db = ServiceDB(tmp_path / "service.sqlite")
    rec = db.add_recommendation(RecommendationRecord("rec-1", "p1", 1.0, 1000.0, 12.0, 1.0, 0.0, "why",
                                                     details={"pta": 0.8, "provenance": PROVENANCE}))
    stored = db.audit(entry(1, action="accept-recommendation", recommendation_hash=rec.hash,
                            detail={"recommendation_id": "rec-1", "reason": "ok"}))
    db.audit(entry(2, action="reject-recommendation", recommendation_hash=rec.hash, detail={}))  # found by its hash
    db.audit(entry(3))
    decided, by_hash, read = reversed(db.audit_log())
    assert (decided.model_hash, decided.data_hash, decided.seed) == ("ab" * 32, "cd" * 32, 7) == (
        stored.model_hash, stored.data_hash, stored.seed)
    assert (by_hash.model_hash, by_hash.seed) == ("ab" * 32, 7) and (read.model_hash, read.data_hash, read.seed) == (None,) * 3
    raw(tmp_path / "service.sqlite").execute("UPDATE audit SET data_hash = ? WHERE seq = 1", ("ee" * 32,))
    assert "broken at row 1" in verify_cli(tmp_path / "service.sqlite").output  # the inputs are part of the hash


def test_threads_sharing_one_db_and_threads_with_their_own_never_fork_the_chain(tmp_path):
    path = tmp_path / "service.sqlite"
    shared = ServiceDB(path)
    own = [ServiceDB(path) for _ in range(3)]  # separate connections: only the database's lock serialises them
    writers = [shared] * 3 + own
    errors = []

    def write(db: ServiceDB, k: int) -> None:
        try:
            for i in range(60):
                db.audit(entry(1000 * k + i))
        except Exception as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(repr(error))

    threads = [threading.Thread(target=write, args=(db, k)) for k, db in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = shared.verify_audit()
    assert errors == [] and result.ok and result.head.count == result.head.seq == 6 * 60, (errors[:3], result)


def _append_from_process(path: str, worker: int, n: int, start) -> None:
    db = ServiceDB(path)
    start.wait()
    for i in range(n):
        db.audit(entry(10_000 * worker + i, actor=f"process-{worker}"))
        time.sleep(0.001)  # a worker does other work between two audit records
    db.close()


def test_two_processes_writing_one_db_never_fork_the_chain(tmp_path):
    path = tmp_path / "service.sqlite"
    ServiceDB(path).close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [context.Process(target=_append_from_process, args=(str(path), k, 150, start)) for k in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    result = verify_cli(path)
    assert result.exit_code == 0 and "300 records, head row 300" in result.output, result.output
    actors = [row[0] for row in sqlite3.connect(path).execute("SELECT actor FROM audit ORDER BY seq")]
    assert sum(a != b for a, b in zip(actors, actors[1:])) > 10  # they did write at the same time
