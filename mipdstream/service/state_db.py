"""The service's own durable state: patients, filter checkpoints and alerts (one SQLite file).

Readings and doses live in the time-series store (`ingest/`); this file holds what the
service derives from them and what clinicians configure. A worker's file sits on its own
volume (a StatefulSet volume in Kubernetes, a compose volume), so a restarted worker finds
its checkpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ingest.sqlite_store import connect
from mipdstream.service import audit_log

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient (
    patient_id TEXT PRIMARY KEY, team TEXT NOT NULL, model TEXT NOT NULL,
    covariates TEXT NOT NULL, origin_s REAL NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    patient_id TEXT PRIMARY KEY, time_h REAL NOT NULL, n_events INTEGER NOT NULL,
    posterior BLOB NOT NULL, saved_at REAL NOT NULL, writer TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS alert (
    alert_id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    raised_at REAL NOT NULL, time_h REAL NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL,
    revised INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'open',
    acknowledged_by TEXT, acknowledged_at REAL
);
CREATE INDEX IF NOT EXISTS alert_by_patient ON alert (patient_id, raised_at);
CREATE TABLE IF NOT EXISTS covariate_change (
    patient_id TEXT NOT NULL, at_s REAL NOT NULL, change TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (patient_id, at_s)
);
CREATE TABLE IF NOT EXISTS assessment (
    patient_id TEXT PRIMARY KEY, assessed_at REAL NOT NULL, time_h REAL NOT NULL, body TEXT NOT NULL
);
"""

# Columns added to tables that older databases created without them (name, table, declaration).
ADDED_COLUMNS = (
    ("recommendation", "loading_amount_mg", "REAL NOT NULL DEFAULT 0"),
    ("recommendation", "loading_duration_h", "REAL NOT NULL DEFAULT 0"),
    ("regimen", "loading_amount_mg", "REAL NOT NULL DEFAULT 0"),
    ("regimen", "loading_duration_h", "REAL NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True)
class CovariateChangeRecord:
    """From ``at_s`` (s since epoch) on, the covariates in ``values`` take these values."""

    at_s: float
    values: dict[str, Any]


@dataclass(frozen=True)
class PatientRecord:
    """A monitored patient: which model describes them, their covariates and their clock.

    ``origin_s`` (s since epoch) is model time zero: an event at epoch ``t`` is at
    ``(t - origin_s) / 3600`` h on the patient's timeline. ``covariates`` hold from the start;
    ``covariate_changes`` (time order) change some of them from a later time on (a new
    creatinine clearance); they are stored apart and come back with the record.
    """

    patient_id: str
    model: str
    covariates: dict[str, Any]
    origin_s: float
    team: str = "default"
    covariate_changes: tuple[CovariateChangeRecord, ...] = ()

    def hours(self, epoch_s: float) -> float:
        return (epoch_s - self.origin_s) / 3600.0

    def covariates_at(self, hours: float) -> dict[str, Any]:
        """The covariates in force at ``hours`` on the patient's clock (changes at ``hours`` included)."""
        current = dict(self.covariates)
        for change in self.covariate_changes:
            if self.hours(change.at_s) <= hours:
                current.update(change.values)
        return current


@dataclass(frozen=True)
class AssessmentRecord:
    """The dosing policy's latest assessment of a patient: the current and the best regimen,
    each with its PTA, risk and metric median per target window.

    ``decision_h`` (model h) is when a change would take effect (the next scheduled dose);
    windows start ``windows_h`` after it and last ``window_h``. Regimens are
    :class:`dosing_policy.Regimen` as dicts, times relative to ``decision_h``; ``current`` None:
    no dose so far (its numbers empty: the drug's targets are not met without the drug)."""

    patient_id: str
    assessed_at: float  # epoch s
    time_h: float  # the posterior's time
    decision_h: float
    quantity: str  # the clinical target's quantity, e.g. AUC24
    low: float
    high: float
    unit: str
    target_source: str  # "default" or "team"
    pta_label: str
    windows_h: tuple[float, ...]
    window_h: float
    current: dict[str, float] | None
    current_pta: tuple[float, ...]
    current_risk: tuple[float, ...]
    current_median: tuple[float, ...]
    recommended: dict[str, float]
    recommended_pta: tuple[float, ...]
    recommended_risk: tuple[float, ...]
    recommended_median: tuple[float, ...]
    metric_unit: str = ""

    @property
    def risk(self) -> float:
        """P(out of target) in the first window under the current regimen (1 with no dose given)."""
        if not self.current_pta:
            return 1.0
        # PTA is a weighted sum in float32; 1 - PTA can round a hair outside [0, 1].
        return min(1.0, max(0.0, 1.0 - self.current_pta[0]))

    def exit_h(self) -> float | None:
        """Model h at which the current regimen's first window with P(out of target) >= 0.5
        starts (None: none within the windows assessed)."""
        if not self.current_pta:
            return self.decision_h
        for start, pta in zip(self.windows_h, self.current_pta):
            if 1.0 - pta >= 0.5:
                return self.decision_h + start
        return None


@dataclass(frozen=True)
class Checkpoint:
    patient_id: str
    time_h: float
    n_events: int
    posterior: bytes


@dataclass(frozen=True)
class AlertRecord:
    alert_id: str
    patient_id: str
    kind: str
    severity: str
    raised_at: float
    time_h: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    revised: bool = False
    status: str = "open"
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None


class ServiceDB:
    def __init__(self, path: Path | str):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = Path(path)
        self._write = connect(self._path)
        self._write.executescript(SCHEMA)
        self._write.executescript(API_SCHEMA)
        self._add_missing_columns()
        audit_log.prepare(self._write)  # the audit table is the chain's (mipdstream/service/audit_log.py)
        self._lock = threading.Lock()
        self._local = threading.local()

    def _add_missing_columns(self) -> None:
        for table, column, declaration in ADDED_COLUMNS:
            present = {row[1] for row in self._write.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._write.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _read(self):
        if getattr(self._local, "connection", None) is None:
            self._local.connection = connect(self._path)
        return self._local.connection

    # -- patients ---------------------------------------------------------------------

    def add_patient(self, patient: PatientRecord) -> None:
        with self._lock:
            self._write.execute(
                "INSERT OR REPLACE INTO patient VALUES (?, ?, ?, ?, ?, ?)",
                (patient.patient_id, patient.team, patient.model, json.dumps(patient.covariates, sort_keys=True),
                 patient.origin_s, time.time()),
            )

    def patients(self) -> list[PatientRecord]:
        rows = self._read().execute("SELECT patient_id, model, covariates, origin_s, team FROM patient ORDER BY patient_id")
        changes = self._covariate_changes()
        return [PatientRecord(pid, model, json.loads(cov), origin, team, changes.get(pid, ())) for pid, model, cov, origin, team in rows]

    def patient(self, patient_id: str) -> PatientRecord | None:
        row = self._read().execute(
            "SELECT patient_id, model, covariates, origin_s, team FROM patient WHERE patient_id = ?", (patient_id,)
        ).fetchone()
        if row is None:
            return None
        return PatientRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], self._covariate_changes(patient_id).get(patient_id, ()))

    def add_covariate_change(self, patient_id: str, change: CovariateChangeRecord) -> None:
        """Record a change; a second change at the same instant replaces the first."""
        with self._lock:
            self._write.execute(
                "INSERT OR REPLACE INTO covariate_change VALUES (?, ?, ?, ?)",
                (patient_id, change.at_s, json.dumps(change.values, sort_keys=True), time.time()),
            )

    def _covariate_changes(self, patient_id: str | None = None) -> dict[str, tuple[CovariateChangeRecord, ...]]:
        query = "SELECT patient_id, at_s, change FROM covariate_change"
        rows = self._read().execute(query + (" WHERE patient_id = ?" if patient_id else "") + " ORDER BY patient_id, at_s",
                                    (patient_id,) if patient_id else ())
        out: dict[str, list] = {}
        for pid, at_s, change in rows:
            out.setdefault(pid, []).append(CovariateChangeRecord(at_s, json.loads(change)))
        return {pid: tuple(changes) for pid, changes in out.items()}

    # -- policy assessments -------------------------------------------------------------

    def save_assessment(self, assessment: AssessmentRecord) -> None:
        """Keep the patient's latest assessment (an older one does not replace a newer)."""
        body = json.dumps(asdict(assessment), sort_keys=True, default=float)
        with self._lock:
            self._write.execute(
                "INSERT INTO assessment VALUES (?, ?, ?, ?) ON CONFLICT (patient_id) DO UPDATE SET "
                "assessed_at = excluded.assessed_at, time_h = excluded.time_h, body = excluded.body "
                "WHERE excluded.time_h >= assessment.time_h",
                (assessment.patient_id, assessment.assessed_at, assessment.time_h, body),
            )

    def assessment(self, patient_id: str) -> AssessmentRecord | None:
        row = self._read().execute("SELECT body FROM assessment WHERE patient_id = ?", (patient_id,)).fetchone()
        return None if row is None else _assessment(json.loads(row[0]))

    def assessments(self) -> dict[str, AssessmentRecord]:
        return {pid: _assessment(json.loads(body)) for pid, body in self._read().execute("SELECT patient_id, body FROM assessment")}

    # -- checkpoints ------------------------------------------------------------------

    def save_checkpoints(self, checkpoints: list[Checkpoint], writer: str = "") -> None:
        """``writer`` names the worker (e.g. its shard), for operators and the scale-out tests."""
        now = time.time()
        with self._lock:
            self._write.execute("BEGIN")
            self._write.executemany(
                "INSERT OR REPLACE INTO checkpoint VALUES (?, ?, ?, ?, ?, ?)",
                [(c.patient_id, c.time_h, c.n_events, c.posterior, now, writer) for c in checkpoints],
            )
            self._write.execute("COMMIT")

    def checkpoint_writers(self) -> dict[str, str]:
        return dict(self._read().execute("SELECT patient_id, writer FROM checkpoint"))

    def checkpoint(self, patient_id: str) -> Checkpoint | None:
        row = self._read().execute(
            "SELECT time_h, n_events, posterior FROM checkpoint WHERE patient_id = ?", (patient_id,)
        ).fetchone()
        return None if row is None else Checkpoint(patient_id, row[0], row[1], bytes(row[2]))

    # -- alerts -----------------------------------------------------------------------

    def add_alerts(self, alerts: list[AlertRecord]) -> None:
        with self._lock:
            self._write.execute("BEGIN")
            self._write.executemany(
                "INSERT OR REPLACE INTO alert VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(a.alert_id, a.patient_id, a.kind, a.severity, a.raised_at, a.time_h, a.message,
                  json.dumps(a.details, sort_keys=True, default=float), int(a.revised), a.status,
                  a.acknowledged_by, a.acknowledged_at) for a in alerts],
            )
            self._write.execute("COMMIT")

    def alerts(self, patient_id: str | None = None, status: str | None = None, limit: int = 1000) -> list[AlertRecord]:
        clauses, args = [], []
        if patient_id is not None:
            clauses.append("patient_id = ?")
            args.append(patient_id)
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read().execute(
            f"SELECT * FROM alert {where} ORDER BY raised_at DESC, alert_id LIMIT ?", (*args, limit)
        )
        return [
            AlertRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), bool(r[8]), r[9], r[10], r[11])
            for r in rows
        ]

    # -- API: users and credentials -------------------------------------------------------

    def add_user(self, username: str, password: str | None, role: str, team: str | None, vendor: str | None = None) -> ApiUser:
        """Create or replace an API user (``password`` None: API keys only)."""
        user = ApiUser(username, role, team, vendor)
        stored = "" if password is None else hash_password(password)
        with self._lock:
            self._write.execute("INSERT OR REPLACE INTO api_user VALUES (?, ?, ?, ?, ?, ?)",
                                (username, stored, role, team, vendor, time.time()))
        return user

    def user(self, username: str) -> ApiUser | None:
        row = self._read().execute("SELECT username, role, team, vendor FROM api_user WHERE username = ?", (username,)).fetchone()
        return None if row is None else ApiUser(*row)

    def users(self, team: str | None = None) -> list[ApiUser]:
        rows = self._read().execute("SELECT username, role, team, vendor FROM api_user ORDER BY username")
        return [ApiUser(*row) for row in rows if team is None or row[2] == team]

    def check_password(self, username: str, password: str) -> ApiUser | None:
        row = self._read().execute("SELECT password_hash FROM api_user WHERE username = ?", (username,)).fetchone()
        if row is None or not row[0] or not verify_password(password, row[0]):
            return None
        return self.user(username)

    def issue_credential(self, username: str, kind: str, ttl_s: float | None = None, label: str = "") -> str:
        """A new secret (session token or API key) for ``username``; only its hash is stored."""
        secret = ("mipd_" if kind == "api_key" else "") + secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._write.execute("INSERT INTO api_credential VALUES (?, ?, ?, ?, ?, ?, 0)",
                                (secret_hash(secret), username, kind, label, now, None if ttl_s is None else now + ttl_s))
        return secret

    def user_for_secret(self, secret: str) -> ApiUser | None:
        row = self._read().execute(
            "SELECT username FROM api_credential WHERE token_hash = ? AND revoked = 0 AND (expires_at IS NULL OR expires_at > ?)",
            (secret_hash(secret), time.time()),
        ).fetchone()
        return None if row is None else self.user(row[0])

    def revoke_secret(self, secret: str) -> None:
        with self._lock:
            self._write.execute("UPDATE api_credential SET revoked = 1 WHERE token_hash = ?", (secret_hash(secret),))

    # -- API: audit log (a hash chain, mipdstream/service/audit_log.py; triggers refuse UPDATE and DELETE)

    def audit(self, entry: AuditEntry) -> AuditEntry:
        """Append ``entry`` to the chain; a decision on a recommendation also records the model
        hash, data hash and seed the recommendation was computed from. Returns it as stored."""
        inputs = audit_log.DecisionInputs(entry.model_hash, entry.data_hash, entry.seed)
        if entry.recommendation_hash and inputs == audit_log.DecisionInputs():
            inputs = self._decision_inputs(entry)
        new = audit_log.NewRecord(entry.at, entry.actor, entry.role, entry.team, entry.action, entry.patient_id, entry.resource,
                                  entry.recommendation_hash, json.dumps(entry.detail, sort_keys=True, default=str), inputs)
        with self._lock:
            seq, digest = audit_log.append(self._write, new)
        return replace(entry, seq=seq, model_hash=inputs.model_hash, data_hash=inputs.data_hash, seed=inputs.seed, hash=digest)

    def _decision_inputs(self, entry: AuditEntry) -> audit_log.DecisionInputs:
        rec_id = entry.detail.get("recommendation_id")
        rec = self.recommendation(rec_id) if isinstance(rec_id, str) else None
        if rec is None or rec.hash != entry.recommendation_hash:
            row = self._read().execute("SELECT recommendation_id FROM recommendation WHERE hash = ? LIMIT 1",
                                       (entry.recommendation_hash,)).fetchone()
            rec = None if row is None else self.recommendation(row[0])
        return audit_log.DecisionInputs() if rec is None else audit_log.decision_inputs(rec.details)

    def audit_head(self) -> audit_log.ChainHead:
        return audit_log.head(self._read())

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> audit_log.Verification:
        return audit_log.verify(self._read(), anchor)

    def audit_log(self, team: str | None = None, patient_id: str | None = None, limit: int = 200) -> list[AuditEntry]:
        clauses, args = [], []
        for column, value in (("team", team), ("patient_id", patient_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read().execute(
            "SELECT seq, at, actor, role, team, action, patient_id, resource, recommendation_hash, detail, "
            f"model_hash, data_hash, seed, prev_hash, hash FROM audit {where} ORDER BY seq DESC LIMIT ?", (*args, limit),
        )
        return [AuditEntry(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]), r[0], *r[10:]) for r in rows]

    # -- API: targets, regimens and recommendations ---------------------------------------

    def set_target(self, target: TargetRecord) -> None:
        with self._lock:
            self._write.execute("INSERT OR REPLACE INTO patient_target VALUES (?, ?, ?, ?)",
                                (target.patient_id, target.low, target.high, target.unit))

    def target(self, patient_id: str) -> TargetRecord | None:
        row = self._read().execute("SELECT * FROM patient_target WHERE patient_id = ?", (patient_id,)).fetchone()
        return None if row is None else TargetRecord(*row)

    def set_regimen(self, regimen: RegimenRecord) -> None:
        """Append to the patient's regimen history; the latest is current."""
        with self._lock:
            self._write.execute(
                "INSERT INTO regimen (patient_id, set_at, amount_mg, interval_h, duration_h, start_s, set_by, recommendation_id, "
                "loading_amount_mg, loading_duration_h) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (regimen.patient_id, regimen.set_at, regimen.amount_mg, regimen.interval_h, regimen.duration_h,
                 regimen.start_s, regimen.set_by, regimen.recommendation_id, regimen.loading_amount_mg, regimen.loading_duration_h),
            )

    def regimens(self, patient_id: str) -> list[RegimenRecord]:
        """The patient's regimen history, newest first."""
        rows = self._read().execute(
            "SELECT patient_id, amount_mg, interval_h, duration_h, start_s, set_by, set_at, recommendation_id, "
            "loading_amount_mg, loading_duration_h FROM regimen WHERE patient_id = ? ORDER BY seq DESC", (patient_id,),
        )
        return [RegimenRecord(*row) for row in rows]

    def regimen(self, patient_id: str) -> RegimenRecord | None:
        history = self.regimens(patient_id)
        return history[0] if history else None

    def add_recommendation(self, rec: RecommendationRecord) -> RecommendationRecord:
        """Store a proposed regimen change (the dosing policy's output); its hash is filled in if empty."""
        rec = rec if rec.hash else replace(rec, hash=recommendation_hash(rec))
        with self._lock:
            self._write.execute(
                f"INSERT OR REPLACE INTO recommendation ({RECOMMENDATION_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                (rec.recommendation_id, rec.patient_id, rec.created_at, rec.amount_mg, rec.interval_h, rec.duration_h,
                 rec.start_s, rec.rationale, rec.hash, json.dumps(rec.details, sort_keys=True, default=float),
                 rec.status, rec.decided_by, rec.decided_at, rec.reason, rec.loading_amount_mg, rec.loading_duration_h),
            )
        return rec

    def recommendations(self, patient_id: str | None = None, status: str | None = None, limit: int = 200) -> list[RecommendationRecord]:
        clauses, args = [], []
        for column, value in (("patient_id", patient_id), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read().execute(
            f"SELECT {RECOMMENDATION_COLUMNS} FROM recommendation {where} ORDER BY created_at DESC, recommendation_id LIMIT ?",
            (*args, limit)
        )
        return [_recommendation(row) for row in rows]

    def recommendation(self, recommendation_id: str) -> RecommendationRecord | None:
        row = self._read().execute(f"SELECT {RECOMMENDATION_COLUMNS} FROM recommendation WHERE recommendation_id = ?",
                                   (recommendation_id,)).fetchone()
        return None if row is None else _recommendation(row)

    def decide_recommendation(self, recommendation_id: str, status: str, user: str, reason: str, at: float) -> bool:
        """Accept or reject an open recommendation; False when it is not open (any more)."""
        with self._lock:
            cursor = self._write.execute(
                "UPDATE recommendation SET status = ?, decided_by = ?, decided_at = ?, reason = ? "
                "WHERE recommendation_id = ? AND status = 'open'", (status, user, at, reason, recommendation_id),
            )
        return cursor.rowcount == 1

    def acknowledge_alert(self, alert_id: str, user: str, at: float) -> bool:
        """Mark an open alert acknowledged; False when it is not open (any more)."""
        with self._lock:
            cursor = self._write.execute(
                "UPDATE alert SET status = 'acknowledged', acknowledged_by = ?, acknowledged_at = ? "
                "WHERE alert_id = ? AND status = 'open'", (user, at, alert_id),
            )
        return cursor.rowcount == 1

    def alert(self, alert_id: str) -> AlertRecord | None:
        r = self._read().execute("SELECT * FROM alert WHERE alert_id = ?", (alert_id,)).fetchone()
        return None if r is None else AlertRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), bool(r[8]), r[9], r[10], r[11])

    def add_summaries(self, summaries: list) -> None:
        """Posterior quantiles after each update (:class:`PosteriorSummary` list), for the dashboard's history band."""
        with self._lock:
            self._write.execute("BEGIN")
            self._write.executemany(
                "INSERT OR REPLACE INTO posterior_summary VALUES (?, ?, ?, ?, ?)",
                [(s.patient_id, s.analyte, s.time_h, s.epoch_s, json.dumps(list(s.quantiles))) for s in summaries],
            )
            self._write.execute("COMMIT")

    def summaries(self, patient_id: str, limit: int = 5000) -> list[tuple[str, float, float, list[float]]]:
        """(analyte, time_h, epoch_s, quantiles) of the patient, oldest first."""
        rows = self._read().execute(
            "SELECT analyte, time_h, epoch_s, quantiles FROM posterior_summary WHERE patient_id = ? ORDER BY time_h LIMIT ?",
            (patient_id, limit),
        )
        return [(a, t, e, json.loads(q)) for a, t, e, q in rows]

    def close(self) -> None:
        self._write.close()


# -- API records --------------------------------------------------------------------------

API_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_user (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL, team TEXT, vendor TEXT, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_credential (
    token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS patient_target (patient_id TEXT PRIMARY KEY, low REAL NOT NULL, high REAL NOT NULL, unit TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS regimen (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, patient_id TEXT NOT NULL, set_at REAL NOT NULL, amount_mg REAL NOT NULL,
    interval_h REAL NOT NULL, duration_h REAL NOT NULL, start_s REAL NOT NULL, set_by TEXT NOT NULL, recommendation_id TEXT
);
CREATE TABLE IF NOT EXISTS recommendation (
    recommendation_id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, created_at REAL NOT NULL, amount_mg REAL NOT NULL,
    interval_h REAL NOT NULL, duration_h REAL NOT NULL, start_s REAL NOT NULL, rationale TEXT NOT NULL, hash TEXT NOT NULL,
    details TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open', decided_by TEXT, decided_at REAL, reason TEXT
);
CREATE TABLE IF NOT EXISTS posterior_summary (
    patient_id TEXT NOT NULL, analyte TEXT NOT NULL, time_h REAL NOT NULL, epoch_s REAL NOT NULL, quantiles TEXT NOT NULL,
    PRIMARY KEY (patient_id, analyte, time_h)
);
CREATE INDEX IF NOT EXISTS recommendation_by_patient ON recommendation (patient_id, created_at);
"""


@dataclass(frozen=True)
class ApiUser:
    """Someone (or a system) using the HTTP API. ``team`` scopes patients; ``vendor`` scopes devices."""

    username: str
    role: str  # clinician | team-admin | device-vendor | read-only
    team: str | None = None
    vendor: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    role: str
    team: str | None
    action: str  # read | create | decide | acknowledge | ...
    patient_id: str | None
    resource: str  # what was read or changed, e.g. "GET /api/v1/patients/p1/readings"
    recommendation_hash: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None
    # what a decided recommendation was computed from (dosing_policy.provenance); filled in by ServiceDB.audit
    model_hash: str | None = None
    data_hash: str | None = None
    seed: int | None = None
    # the chain (mipdstream/service/audit_log.py)
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(frozen=True)
class TargetRecord:
    """The therapeutic range of the patient's first analyte (e.g. 10-20 mg/L)."""

    patient_id: str
    low: float
    high: float
    unit: str


@dataclass(frozen=True)
class RegimenRecord:
    """Intermittent infusions: ``amount_mg`` every ``interval_h`` over ``duration_h``, the first
    at ``start_s`` (epoch s); with ``loading_amount_mg`` > 0 that first dose is a loading dose of
    that amount over ``loading_duration_h`` (0: the maintenance duration)."""

    patient_id: str
    amount_mg: float
    interval_h: float
    duration_h: float
    start_s: float
    set_by: str
    set_at: float
    recommendation_id: str | None = None
    loading_amount_mg: float = 0.0
    loading_duration_h: float = 0.0


@dataclass(frozen=True)
class RecommendationRecord:
    recommendation_id: str
    patient_id: str
    created_at: float
    amount_mg: float
    interval_h: float
    duration_h: float
    start_s: float
    rationale: str
    hash: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "open"  # open | accepted | rejected | superseded | withdrawn
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None
    loading_amount_mg: float = 0.0
    loading_duration_h: float = 0.0


RECOMMENDATION_COLUMNS = ("recommendation_id, patient_id, created_at, amount_mg, interval_h, duration_h, start_s, rationale, "
                          "hash, details, status, decided_by, decided_at, reason, loading_amount_mg, loading_duration_h")


def _recommendation(row) -> RecommendationRecord:
    return RecommendationRecord(*row[:9], json.loads(row[9]), *row[10:])


def _assessment(body: dict) -> AssessmentRecord:
    names = {f.name for f in fields(AssessmentRecord)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items() if k in names}
    return AssessmentRecord(**values)


def recommendation_hash(rec: RecommendationRecord) -> str:
    """sha256 of what was proposed (patient, regimen, rationale, details), as the audit log cites it."""
    content = {"patient_id": rec.patient_id, "created_at": rec.created_at, "amount_mg": rec.amount_mg,
               "interval_h": rec.interval_h, "duration_h": rec.duration_h, "start_s": rec.start_s,
               "rationale": rec.rationale, "details": rec.details}
    if rec.loading_amount_mg > 0:  # absent otherwise, so the hashes of recommendations without one stay as they were
        content.update(loading_amount_mg=rec.loading_amount_mg, loading_duration_h=rec.loading_duration_h)
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=float).encode()).hexdigest()


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 200_000)
    return f"pbkdf2_sha256$200000${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, rounds, salt, digest = stored.split("$")
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    return hmac.compare_digest(candidate.hex(), digest)
