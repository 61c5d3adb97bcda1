"""`mipd replay`: one-step-ahead forecasts of a NONMEM-style event dataset.

Input columns (names case-insensitive): ID, TIME (h), AMT (mg), RATE (mg/h; 0 = bolus),
DV (reading), EVID (0 reading, 1 dose, 2 other: ignored), MDV (1 = no reading on this row),
CMT (1-based compartment of a dose), optional DVID (1-based analyte of a reading), optional
CENS or BLQ (1 = DV is the LLOQ and the reading is below it), and covariate columns (the model's
covariates are taken from each patient's first row). A covariate whose value changes within a
patient is time-varying: the new value applies from the TIME of the first row that carries it
(a laboratory value counts from when it was measured; NONMEM's PREDPP would instead use a
record's covariates for the interval that ends at that record). Only ID, TIME, AMT and DV are
required; EVID defaults to 1 where AMT > 0 and 0 elsewhere.

Output columns: ID, TIME, DV, PRED_MEAN, PRED_Q05, PRED_Q50, PRED_Q95, CENS.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from assimilation import Dose, Model, load_model
from assimilation.events import CovariateChange, Reading
from assimilation.replay import PatientRecord, replay, summarize

__all__ = ["DatasetError", "read_nonmem_csv", "replay_command", "write_forecasts"]

REQUIRED = ("ID", "TIME", "AMT", "DV")
KNOWN = ("ID", "TIME", "AMT", "RATE", "DV", "EVID", "MDV", "CMT", "DVID", "CENS", "BLQ")


class DatasetError(ValueError):
    """A problem in the input dataset, naming the column and (1-based, header = row 1) row."""


def _number(row: dict, column: str, line: int, default: float | None = None) -> float:
    text = (row.get(column) or "").strip()
    if text in ("", "."):
        if default is None:
            raise DatasetError(f"row {line}: column {column} is empty")
        return default
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"row {line}: column {column} has {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"row {line}: column {column} has {text!r}, not a finite number")
    return value


def _covariate_names(model: Model) -> set[str]:
    return {effect.covariate for effect in model.population.effects}


def read_nonmem_csv(path: Path, model: Model) -> list[PatientRecord]:
    """Patients in order of first appearance, each with covariates and sorted events."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: empty file, expected a header with {', '.join(REQUIRED)}")
        by_upper = {name.strip().upper(): name for name in reader.fieldnames}
        missing = [c for c in REQUIRED if c not in by_upper]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (have {', '.join(reader.fieldnames)})")
        needed = {}
        for covariate in sorted(_covariate_names(model)):
            column = by_upper.get(covariate.upper())
            if column is None:
                raise DatasetError(f"{path}: model {model.name!r} needs covariate column {covariate}")
            needed[covariate] = column
        patients: dict[str, PatientRecord] = {}
        current: dict[str, dict] = {}  # each patient's covariate values as of its latest row
        for line, raw in enumerate(reader, start=2):
            row = {upper: raw.get(original) for upper, original in by_upper.items()}
            pid = (row["ID"] or "").strip()
            if not pid:
                raise DatasetError(f"row {line}: column ID is empty")
            values = _covariates(raw, needed, line, required=pid not in patients)
            if pid not in patients:
                patients[pid] = PatientRecord(pid, dict(values), [])
                current[pid] = values
            changed = {name: value for name, value in values.items() if value != current[pid][name]}
            if changed:
                patients[pid].events.append(CovariateChange(_number(row, "TIME", line), changed))
                current[pid] = {**current[pid], **changed}
            event = _event(row, line, model)
            if event is not None:
                patients[pid].events.append(event)
    return list(patients.values())


def _covariates(raw: dict, needed: dict[str, str], line: int, required: bool) -> dict:
    """The row's covariate values; an empty cell is an error on a patient's first row and
    "unchanged" on later rows."""
    covariates = {}
    for covariate, column in needed.items():
        text = (raw.get(column) or "").strip()
        if text in ("", "."):
            if not required:
                continue
            raise DatasetError(f"row {line}: covariate column {column} is empty")
        try:
            covariates[covariate] = float(text)
        except ValueError:
            covariates[covariate] = text  # categorical level
    return covariates


def _event(row: dict, line: int, model: Model) -> Dose | Reading | None:
    time = _number(row, "TIME", line)
    amount = _number(row, "AMT", line, 0.0)
    evid = int(_number(row, "EVID", line, 1.0 if amount > 0 else 0.0)) if "EVID" in row else (1 if amount > 0 else 0)
    if evid == 2:
        return None
    if evid not in (0, 1):
        raise DatasetError(f"row {line}: column EVID = {evid} is not supported (0 reading, 1 dose, 2 other)")
    if evid == 1:
        if amount <= 0:
            raise DatasetError(f"row {line}: column AMT must be > 0 for a dose (EVID 1), got {amount}")
        rate = _number(row, "RATE", line, 0.0) if "RATE" in row else 0.0
        if rate < 0:
            raise DatasetError(f"row {line}: column RATE = {rate}: modelled rates/durations (-1, -2) are not supported")
        compartment = model.dose_compartment
        if "CMT" in row and (row["CMT"] or "").strip() not in ("", "."):
            cmt = int(_number(row, "CMT", line))
            if not 1 <= cmt <= model.n_compartments:
                raise DatasetError(f"row {line}: column CMT = {cmt} out of range 1..{model.n_compartments} for model {model.name!r}")
            compartment = cmt - 1
        return Dose(time, amount, compartment, amount / rate if rate > 0 else 0.0)
    if "MDV" in row and _number(row, "MDV", line, 0.0) == 1:
        return None
    value = _number(row, "DV", line)
    analyte = int(_number(row, "DVID", line, 1.0)) - 1 if "DVID" in row else 0
    if not 0 <= analyte < len(model.analytes):
        raise DatasetError(f"row {line}: column DVID = {analyte + 1} out of range 1..{len(model.analytes)}")
    flag = "CENS" if "CENS" in row else ("BLQ" if "BLQ" in row else None)
    censored = flag is not None and _number(row, flag, line, 0.0) == 1
    return Reading(time, value, analyte, censored)


def write_forecasts(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "TIME", "DV", "PRED_MEAN", "PRED_Q05", "PRED_Q50", "PRED_Q95", "CENS"])
        for r in rows:
            writer.writerow([r.id, f"{r.time:g}", f"{r.dv:g}", f"{r.pred_mean:.6g}", f"{r.pred_q05:.6g}", f"{r.pred_q50:.6g}", f"{r.pred_q95:.6g}", int(r.censored)])


def replay_command(data: Path, model: str, method: str = "pf", out: Path | None = None, particles: int = 1000, seed: int = 0) -> dict:
    """Replay ``data`` with ``model`` (built-in name or .py path); print and return the summary."""
    from tqdm import tqdm

    chosen = load_model(model)
    patients = read_nonmem_csv(Path(data), chosen)
    total = sum(isinstance(e, Reading) for p in patients for e in p.events)
    with tqdm(total=total, desc=f"replay {method}", unit="reading") as bar:
        rows = replay(chosen, patients, method, particles, seed, progress=bar.update)
    if out is not None:
        write_forecasts(Path(out), rows)
    summary = summarize(rows)._asdict()
    summary.update(patients=len(patients), method=method, model=chosen.name)
    print(
        f"{summary['model']} / {method}: {len(patients)} patients, {summary['n_readings']} readings forecast | "
        f"bias {summary['bias']:+.3g} | relative RMSE {100 * summary['relative_rmse']:.1f} % | "
        f"MdAPE {100 * summary['mdape']:.1f} % | 90 % coverage {100 * summary['coverage90']:.1f} %"
    )
    return summary
