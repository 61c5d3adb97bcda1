"""`mipd replay`: one-step-ahead forecasts of a NONMEM event dataset.

The CSV is read completely or not at all by :func:`assimilation.nonmem.read_records` (its
docstring and docs/MODELS.md, "NONMEM event records", have the table): ID, TIME (h), EVID
(0 reading, 1 dose, 2 other, 3 reset, 4 reset and dose), MDV, AMT (mg), RATE (mg/h) or DUR
(h), CMT (by number or name; on a reading row the compartment read), DVID (analyte), SS and
II (a steady-state dose: SS 1 replaces what the body held, SS 2 adds to it), ADDL and II
(additional doses), CENS or BLQ and LLOQ (readings below the limit of quantification), and
the model's covariate columns, names case-insensitive; only ID, TIME, AMT and DV are
required. A covariate whose value changes within a patient is time-varying: by default
(``covariates="locf"``) the new value holds from the TIME of its row; ``"nonmem"`` follows
NONMEM, where a record's covariates hold for the interval ending at it. Any other column is
an error unless named in ``ignore``, and so is any code the reader does not handle: the
message names the row (header = row 1) and the column.

Output columns: ID, TIME, DV, PRED_MEAN, PRED_Q05, PRED_Q50, PRED_Q95, CENS, LOGLIK (the
reading's one-step-ahead predictive log-likelihood, :mod:`assimilation.replay`). The command
prints the summary and each patient's log-likelihood (the sum of its LOGLIK).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from assimilation import Model, load_model
from assimilation.events import Reading
from assimilation.nonmem import NonmemDataError, read_records
from assimilation.replay import PatientRecord, log_lik_by_patient, replay, summarize

__all__ = ["DatasetError", "read_nonmem_csv", "replay_command", "write_forecasts"]

DatasetError = NonmemDataError
"""A problem in the input dataset, naming the column and (1-based, header = row 1) row."""


def read_nonmem_csv(path: Path, model: Model, *, covariates: str = "locf", ignore: Sequence[str] = ()) -> list[PatientRecord]:
    """Patients in order of first appearance, each with covariates and its events."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            return read_records(reader.fieldnames or [], reader, model, covariates=covariates, ignore=ignore)
        except NonmemDataError as error:
            named = NonmemDataError(f"{path}: {error}")
            named.row, named.column = error.row, error.column
            raise named from None


def write_forecasts(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "TIME", "DV", "PRED_MEAN", "PRED_Q05", "PRED_Q50", "PRED_Q95", "CENS", "LOGLIK"])
        for r in rows:
            writer.writerow([r.id, f"{r.time:g}", f"{r.dv:g}", f"{r.pred_mean:.6g}", f"{r.pred_q05:.6g}", f"{r.pred_q50:.6g}", f"{r.pred_q95:.6g}",
                             int(r.censored), f"{r.log_lik:.6g}"])


def replay_command(data: Path, model: str, method: str = "pf", out: Path | None = None, particles: int = 1000, seed: int = 0,
                   covariates: str = "locf", ignore: Sequence[str] = ()) -> dict:
    """Replay ``data`` with ``model`` (built-in name or .py path); print and return the summary.
    ``covariates``, ``ignore``: as for :func:`read_nonmem_csv`."""
    from tqdm import tqdm

    chosen = load_model(model)
    patients = read_nonmem_csv(Path(data), chosen, covariates=covariates, ignore=ignore)
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
        f"MdAPE {100 * summary['mdape']:.1f} % | 90 % coverage {100 * summary['coverage90']:.1f} % | "
        f"one-step-ahead log-likelihood {summary['log_lik']:.3f}"
    )
    print("log-likelihood per patient (sum of one-step-ahead log predictive densities):")
    for patient, value in log_lik_by_patient(rows).items():
        print(f"  {patient}: {value:.3f}")
    return summary
