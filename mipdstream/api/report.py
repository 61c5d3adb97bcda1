"""The printable exposure report of one patient and period, in the spirit of the Ambulatory
Glucose Profile of diabetes care: exposure percentiles over time, time in target per day, the
doses given, the levels measured, the model and its version, and the decisions taken (who,
when, why). One HTML page with print styles; the charts are static SVG."""

from __future__ import annotations

import datetime as dt
import html
import time

import numpy as np

from assimilation import load_model
from dosing_policy.metrics import display_unit
from dosing_policy.provenance import model_hash
from mipdstream.api import exposure, svg
from mipdstream.service import targets
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import PatientRecord, ServiceDB

AUDITED = {"accept-recommendation", "reject-recommendation", "set-regimen", "set-target", "set-covariates", "add-covariate-change",
           "acknowledge-alert", "create-patient", "record-dose"}


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ""
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _e(value) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[str]], empty: str = "none") -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _value(v: float, expected: bool) -> str:
    return f"{v:.0%}" if expected else f"{v:.3g}"


def render(live: LiveService, db: ServiceDB, patient: PatientRecord, start_s: float | None, end_s: float) -> str:
    model = load_model(patient.model)
    found = targets.patient_target(db.target(patient.patient_id), patient.model)
    doses = live.ingest.store.doses(patient.patient_id)
    first_dose_s = min((d.given_at for d in doses), default=patient.origin_s)
    start_s = first_dose_s if start_s is None else start_s
    in_period = lambda t: start_s <= t <= end_s
    readings = [r for r in live.ingest.store.readings(patient.patient_id, start=start_s, end=end_s)]
    doses = [d for d in doses if in_period(d.given_at)]
    hours = lambda t: (t - first_dose_s) / 3600.0
    labels = {hours(t): _when(t)[5:16] for t in np.arange(start_s, end_s + 1, max(6, (end_s - start_s) / 3600 / 6) * 3600)}
    parts = [_header(patient, model, found, start_s, end_s, live)]
    course = exposure.course_exposure(live, patient, 24.0, daily=True)
    if course is not None:
        parts.append(_daily(course, patient, hours, labels, doses, start_s, end_s))
    parts.append(_levels(model, db, patient, readings, doses, hours, labels, start_s, end_s))
    parts.append(_records(model, db, patient, doses, readings, in_period))
    return PAGE.format(title=_e(f"Exposure report · {patient.patient_id}"), body="".join(parts))


def _header(patient, model, found, start_s, end_s, live) -> str:
    covariates = ", ".join(f"{_e(k)} {_e(v)}" for k, v in patient.covariates.items()) or "none"
    target = "none (a model without a dosing policy)" if found is None else (
        f"{_e(found.clinical.describe())} ({'set by the care team' if found.source == 'team' else 'default'}; source: {_e(found.clinical.source)})")
    filters = live.assimilator.filters
    return (f"<header><h1>Exposure report · patient {_e(patient.patient_id)}</h1>"
            f"<p>Period {_e(_when(start_s))} to {_e(_when(end_s))} · generated {_e(_when(time.time()))}</p></header>"
            f"<section><h2>Model and target</h2><dl>"
            f"<dt>Model</dt><dd>{_e(model.name)} (version sha256 {_e(model_hash(model)[:16])}…)</dd>"
            f"<dt>Drug</dt><dd>{_e(targets.drug_of(patient.model) or '–')}</dd>"
            f"<dt>Covariates</dt><dd>{covariates}</dd><dt>Target</dt><dd>{target}</dd>"
            f"<dt>Filter</dt><dd>{_e(filters.method)}, {filters.n_particles} particles, seed {filters.seed}</dd></dl></section>")


def _daily(course, patient, hours, labels, doses, start_s, end_s) -> str:
    series, unit = course.current, display_unit(course.unit)
    starts = [patient.origin_s + 3600 * s for s in course.starts_h]
    keep = [i for i, s in enumerate(starts) if s < end_s + 86400 and s + 3600 * course.window_h > start_s]
    mid = [hours(starts[i]) + course.window_h / 2 for i in keep]
    q = series.quantiles[keep]
    chart = svg.chart(
        bands=[svg.Band(mid, q[:, 0], q[:, 4], "#1f6feb33"), svg.Band(mid, q[:, 1], q[:, 3], "#1f6feb55")],
        lines=[svg.Line(mid, q[:, 2], "#1f6feb")], markers=[hours(d.given_at) for d in doses],
        target=None if course.expected else (course.target.low, course.target.high), x_labels=labels,
        y_label=f"{course.label} {unit}".strip(), title=course.label)
    rows = []
    for i in keep:
        s = starts[i]
        state = "estimated from the data" if s + 3600 * course.window_h <= patient.origin_s + 3600 * course.posterior_h else "forecast, current regimen"
        in_target = f"{series.mean[i]:.0%} of the day (expected)" if course.expected else f"{series.pta[i]:.0%}"
        rows.append([_e(_when(s)), f"<b>{_value(series.quantiles[i, 2], course.expected)}</b> "
                     f"({_value(series.quantiles[i, 0], course.expected)}–{_value(series.quantiles[i, 4], course.expected)})",
                     in_target, _e(state)])
    head = ["Day from", f"{course.label}, median (90 % interval) {unit}".strip(),
            "Time in target range" if course.expected else "P(in target range)", "Basis"]
    return (f"<section><h2>Exposure per day: {_e(course.label)}</h2>{chart}"
            f'<p class="muted">Target {_e(course.target.low if not course.expected else "")}'
            f'{"–" + _e(course.target.high) if not course.expected else ""} · past days are the posterior estimate given every level so far '
            f"(the patient's parameters replayed through the doses given); bands 50 % and 90 %.</p>{_table(head, rows)}</section>")


def _levels(model, db, patient, readings, doses, hours, labels, start_s, end_s) -> str:
    out = ["<section><h2>Levels: posterior percentiles and readings</h2>"]
    history = db.summaries(patient.patient_id)
    for analyte in model.analytes:
        code = analyte.code or analyte.name
        points = [(hours(e), q) for a, _, e, q in history if a == code and start_s <= e <= end_s]
        mine = [r for r in readings if analyte.reads(r.analyte)]
        x = [p[0] for p in points]
        q = np.asarray([p[1] for p in points]).reshape(-1, 5)
        chart = svg.chart(
            bands=[svg.Band(x, q[:, 0], q[:, 4], "#1f6feb33"), svg.Band(x, q[:, 1], q[:, 3], "#1f6feb55")] if len(x) else [],
            lines=[svg.Line(x, q[:, 2], "#1f6feb")] if len(x) else [],
            points=[svg.Points([hours(r.measured_at) for r in mine], [r.value for r in mine], "#c62828")],
            markers=[hours(d.given_at) for d in doses], x_labels=labels,
            y_label=f"{analyte.name} {display_unit(analyte.unit)}", title=analyte.name)
        out.append(f"<h3>{_e(analyte.name)} ({_e(display_unit(analyte.unit))}) · {len(mine)} readings</h3>{chart}")
    out.append('<p class="muted">Blue: posterior 50 % and 90 % intervals of the true level after each update; red: readings; '
               "purple ticks: doses.</p></section>")
    return "".join(out)


def _records(model, db, patient, doses, readings, in_period) -> str:
    # a wearable's readings (every few minutes) are in the level charts; the table lists the others
    worn = {code for a in model.analytes if a.sensor is not None for code in (a.name, *a.codes)}
    dose_rows = [[_e(_when(d.given_at)), f"{d.amount_mg:g} mg", _e(d.route), _e(f"{(d.duration_s or 0) / 3600:g} h"),
                  _e(d.status), _e(d.device_id)] for d in doses]
    level_rows = [[_e(_when(r.measured_at)), _e(r.analyte), f"{r.value:g} {_e(display_unit(r.unit))}", _e(r.device_id)]
                  for r in readings if r.analyte not in worn][-200:]
    recs = [r for r in db.recommendations(patient.patient_id) if in_period(r.created_at)]
    rec_rows = [[_e(_when(r.created_at)), _e(_describe(r)), _e(r.status), _e(r.decided_by or ""), _e(_when(r.decided_at)),
                 _e(r.reason or ""), _e(r.hash[:12])] for r in recs]
    audit_rows = [[_e(_when(a.at)), _e(a.actor), _e(a.role), _e(a.action), _e(a.detail.get("reason", "") if a.detail else "")]
                  for a in db.audit_log(patient_id=patient.patient_id, limit=2000) if a.action in AUDITED and in_period(a.at)]
    return ("<section><h2>Doses given</h2>"
            + _table(["Given", "Amount", "Route", "Duration", "Status", "Device"], dose_rows)
            + "<h2>Levels measured (point-of-care and laboratory; wearable readings are in the charts)</h2>"
            + _table(["Measured", "Analyte", "Value", "Device"], level_rows)
            + "<h2>Recommendations and decisions</h2>"
            + _table(["Proposed", "Regimen", "Status", "Decided by", "When", "Reason", "Hash"], rec_rows)
            + "<h2>Audit trail of changes</h2>"
            + _table(["When", "Who", "Role", "Action", "Reason"], audit_rows) + "</section>")


def _describe(rec) -> str:
    from mipdstream.service import regimens

    return regimens.describe(rec)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/dashboard/static/report.css"></head>
<body class="report">{body}
<footer>mipdstream · decision support: every recommendation is accepted or rejected by a clinician.</footer>
</body></html>"""
