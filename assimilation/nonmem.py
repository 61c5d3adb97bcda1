"""NONMEM event records -> one :class:`~assimilation.replay.PatientRecord` per patient.

Pure: :func:`read_records` takes the header and the rows (mappings column -> text, as
``csv.DictReader`` gives them) and returns records; opening a file is the caller's business
(``mipdstream.replay.read_nonmem_csv``). Rows are numbered as in the file: the header is
row 1, the first record row 2. Column names are case-insensitive.

| item | meaning here |
|---|---|
| ID | patient; a patient's rows must be contiguous (NONMEM starts a new individual when ID changes) |
| TIME | h, non-decreasing within a patient (NONMEM lets time go back after a reset; refused here) |
| EVID | 0 reading, 1 dose, 2 other (covariates only), 3 reset, 4 reset and dose; default 1 where AMT > 0, else 0 |
| MDV | 1 on a reading row: no reading; a dose row must not say 0 |
| AMT | mg, > 0 on a dose row, empty or 0 elsewhere |
| RATE | mg/h: 0 bolus (or DUR), > 0 infusion over AMT/RATE h; −1 / −2 (rate / duration modelled) are refused: no model declares them |
| DUR | h, infusion duration (instead of RATE) |
| CMT | a dose's compartment, by number (1-based; 0 or empty: the model's dose compartment) or by name; on a reading row the compartment read, which must be read by exactly one analyte (or by the DVID's) |
| DVID | the reading's analyte, 1-based or by name; needed when the model has several analytes and CMT does not say |
| SS, II | SS 1: the dose is the last of an endless train every II h, what the body held is replaced; SS 2: the train is added to it (linear models) -> :class:`~assimilation.events.SteadyState` |
| ADDL, II | ADDL more doses, every II h after the row's dose -> one :class:`~assimilation.dosing.Dose` each |
| CENS or BLQ | 1: the reading is below the limit of quantification (the LLOQ column, else DV); −1 (above a limit) refused |
| LLOQ | a reading with DV < LLOQ is censored at LLOQ (unless CENS/BLQ says 0: a contradiction, refused) |
| DV | the reading; ignored on rows that are not readings |
| covariates | the model's covariates (``Model.covariate_names``); checked by ``Model.check_covariates`` |

Time-varying covariates (``covariates=``): a value in a covariate column that differs from
the patient's current one is a :class:`~assimilation.events.CovariateChange`. ``"locf"``
(default): it holds from the TIME of its row on (last observation carried forward; a reading
on that row still sees the old value, as the engine sees a reading at a dose's time before
the dose). ``"nonmem"``: NONMEM's convention, a record's covariates hold for the interval
that ends at it, so the change starts at the previous row's TIME. An empty cell after a
patient's first row means "unchanged".

Refused, with the row and column named: any other column, unless named in ``ignore`` (a
column the model does not use, such as TAD or a comment flag, must be left out on purpose,
so that a misspelt covariate is never silently ignored); any code or value outside the table
above; and rows whose order NONMEM would read differently from this engine, which takes a
reading at a dose's time before the dose (a trough): a reading row after a bolus row of the
same TIME into a compartment its analyte reads (NONMEM: after the dose), and a reading row
before a reset or steady-state row of the same TIME (NONMEM: before it). Additional doses
(ADDL) at a reading's time are given after the reading.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .covariates import CovariateError
from .dosing import Dose
from .events import CovariateChange, Reading, Reset, SteadyState
from .model import Model
from .replay import PatientRecord
from .steady_state import check_steady_state

__all__ = ["NonmemDataError", "read_records", "ITEMS", "REQUIRED", "CONVENTIONS"]

REQUIRED = ("ID", "TIME", "AMT", "DV")
ITEMS = REQUIRED + ("EVID", "MDV", "RATE", "DUR", "CMT", "DVID", "SS", "II", "ADDL", "CENS", "BLQ", "LLOQ")
CONVENTIONS = ("locf", "nonmem")
_DOSE_ONLY = ("RATE", "DUR", "SS", "II", "ADDL")
_EVIDS = "0 reading, 1 dose, 2 other, 3 reset, 4 reset and dose"


class NonmemDataError(ValueError):
    """A dataset this reader refuses: the message names the row (header = row 1) and column."""

    def __init__(self, message: str, row: int | None = None, column: str | None = None):
        super().__init__(message if row is None else f"row {row}: {message}")
        self.row, self.column = row, column


def read_records(columns: Sequence[str], rows: Iterable[Mapping[str, str | None]], model: Model, *,
                 covariates: str = "locf", ignore: Sequence[str] = (), first_row: int = 2) -> list[PatientRecord]:
    """Patients in order of appearance, each with its first row's covariates and its events
    (doses, steady-state doses, resets, readings, covariate changes) in row order."""
    if covariates not in CONVENTIONS:
        raise ValueError(f"covariates={covariates!r}: choose one of {', '.join(CONVENTIONS)}")
    header = _Header.of(columns, model, ignore)
    reader = _Reader(model, header, covariates)
    for number, raw in enumerate(rows, start=first_row):
        reader.add(_Row(number, raw, header))
    return [patient.record() for patient in reader.patients]


# ----------------------------------------------------------------------------- the header


class _Header(NamedTuple):
    items: dict  # item (upper case) -> column name as written
    covariates: dict  # model covariate -> column name as written
    ignored: tuple  # column names as written

    @classmethod
    def of(cls, columns: Sequence[str], model: Model, ignore: Sequence[str]) -> "_Header":
        if not columns:
            raise NonmemDataError(f"empty file, expected a header with {', '.join(REQUIRED)}")
        by_upper: dict[str, str] = {}
        for name in columns:
            key = (name or "").strip().upper()
            if key in by_upper:
                raise NonmemDataError(f"column {name!r} appears twice (names are case-insensitive)", 1, name)
            by_upper[key] = name
        missing = [item for item in REQUIRED if item not in by_upper]
        if missing:
            raise NonmemDataError(f"missing column(s) {', '.join(missing)} (have {', '.join(columns)})")
        if "CENS" in by_upper and "BLQ" in by_upper:
            raise NonmemDataError("both CENS and BLQ columns: keep one", 1, by_upper["BLQ"])
        wanted = {c.upper(): c for c in model.covariate_names}
        covariate_columns = {}
        for upper, covariate in wanted.items():
            if upper not in by_upper:
                raise NonmemDataError(f"model {model.name!r} needs covariate column {covariate}")
            covariate_columns[covariate] = by_upper[upper]
        ignored = _ignored(ignore, by_upper, wanted)
        for upper, name in by_upper.items():
            if upper not in ITEMS and upper not in wanted and upper not in ignored:
                raise NonmemDataError(
                    f"column {name} is neither a NONMEM data item this reader handles ({', '.join(ITEMS)}) nor a covariate "
                    f"of model {model.name!r} ({', '.join(model.covariate_names) or 'none'}); leave it out on purpose with "
                    f"ignore=[{name!r}] (mipd replay --ignore {name})", 1, name)
        items = {upper: name for upper, name in by_upper.items() if upper in ITEMS}
        return cls(items, covariate_columns, tuple(by_upper[u] for u in ignored))


def _ignored(ignore: Sequence[str], by_upper: dict, covariates: dict) -> set:
    ignored = set()
    for name in ignore:
        upper = name.strip().upper()
        if upper not in by_upper:
            raise NonmemDataError(f"column {name!r} is to be ignored but is not in the header ({', '.join(by_upper.values())})", 1, name)
        if upper in ITEMS or upper in covariates:
            raise NonmemDataError(f"column {name!r} cannot be ignored: the reader or the model uses it", 1, name)
        ignored.add(upper)
    return ignored


# ----------------------------------------------------------------------------- one row


class _Row:
    """One record row: typed access to its cells, errors naming the row and column."""

    def __init__(self, number: int, raw: Mapping, header: _Header):
        if raw.get(None):
            raise NonmemDataError(f"{len(raw[None])} more value(s) than the header has columns", number)
        self.line, self.raw, self.header = number, raw, header

    def has(self, item: str) -> bool:
        return item in self.header.items

    def text(self, item: str) -> str:
        """The cell of a data item, stripped; '' when empty, '.' or the column is absent."""
        if item not in self.header.items:
            return ""
        return self._cell(self.header.items[item], item)

    def _cell(self, column: str, label: str) -> str:
        value = self.raw.get(column)
        if value is None:
            raise NonmemDataError(f"column {label} is missing (fewer values than the header has columns)", self.line, label)
        value = value.strip()
        return "" if value == "." else value

    def number(self, item: str, default: float | None = None) -> float:
        text = self.text(item)
        if text == "":
            if default is None:
                raise NonmemDataError(f"column {item} is empty", self.line, item)
            return default
        try:
            value = float(text)
        except ValueError:
            raise NonmemDataError(f"column {item} has {text!r}, not a number", self.line, item) from None
        if not math.isfinite(value):
            raise NonmemDataError(f"column {item} has {text!r}, not a finite number", self.line, item)
        return value

    def code(self, item: str, default: int, allowed: Sequence[int], meaning: str) -> int:
        value = self.number(item, float(default))
        if not value.is_integer() or int(value) not in allowed:
            raise self.error(item, f"column {item} = {value:g} is not supported ({meaning})")
        return int(value)

    def covariate_text(self, covariate: str) -> str:
        return self._cell(self.header.covariates[covariate], self.header.covariates[covariate])

    def error(self, column: str, message: str) -> NonmemDataError:
        return NonmemDataError(message, self.line, column)


# ----------------------------------------------------------------------------- patients


class _Patient:
    def __init__(self, pid: str, covariates: dict):
        self.id, self.covariates, self.current = pid, covariates, dict(covariates)
        self.events: list = []
        self.last_time: float | None = None
        self.same_time: list[tuple] = []  # (kind, row, detail) of the rows at last_time, in row order

    def record(self) -> PatientRecord:
        return PatientRecord(self.id, dict(self.covariates), self.events)


class _Reader:
    def __init__(self, model: Model, header: _Header, convention: str):
        self.model, self.header, self.convention = model, header, convention
        self.patients: list[_Patient] = []
        self.seen: set[str] = set()
        self.reads = analyte_compartments(model)

    def add(self, row: _Row) -> None:
        pid = row.text("ID")
        if not pid:
            raise row.error("ID", "column ID is empty")
        time = row.number("TIME")
        patient = self._patient(row, pid)
        previous = patient.last_time
        if previous is not None and time < previous:
            raise row.error("TIME", f"column TIME = {time:g} is before the previous row's {previous:g}: TIME must not decrease "
                                    "within a patient (NONMEM allows it after a reset, EVID 3/4; this reader does not)")
        if previous is None or time != previous:
            patient.same_time = []
        patient.last_time = time
        self._covariate_changes(row, patient, time, previous)
        amount = row.number("AMT", 0.0)
        evid = row.code("EVID", 1 if amount > 0 else 0, range(5), _EVIDS)
        mdv = row.code("MDV", 0 if evid == 0 else 1, (0, 1), "0 a reading, 1 none") if row.text("MDV") else None
        if evid in (1, 4):
            self._dose(row, patient, time, evid, amount, mdv)
        else:
            self._not_a_dose(row, evid, amount)
        if evid == 3:
            self._reset(row, patient, time)
        if evid == 0 and mdv != 1:
            self._reading(row, patient, time)
        elif self._censoring_flag(row) == 1:
            raise row.error(self._flag_column(), f"column {self._flag_column()} = 1 on a row without a reading (EVID {evid}, MDV {mdv})")

    def _patient(self, row: _Row, pid: str) -> _Patient:
        if self.patients and self.patients[-1].id == pid:
            return self.patients[-1]
        if pid in self.seen:
            raise row.error("ID", f"column ID = {pid} appears again after other patients: NONMEM would read these rows as a "
                                  "new individual; make each patient's rows contiguous")
        self.seen.add(pid)
        patient = _Patient(pid, self._checked(row, self._covariate_values(row, required=True), partial=False))
        self.patients.append(patient)
        return patient

    # ------------------------------------------------------------------ covariates

    def _covariate_values(self, row: _Row, required: bool) -> dict:
        values = {}
        for covariate, column in self.header.covariates.items():
            text = row.covariate_text(covariate)
            if text == "":
                if required:
                    raise row.error(column, f"covariate column {column} is empty")
                continue
            try:
                values[covariate] = float(text)
            except ValueError:
                values[covariate] = text  # a categorical level
        return values

    def _checked(self, row: _Row, values: dict, partial: bool) -> dict:
        try:
            return self.model.check_covariates(values, partial=partial)
        except CovariateError as error:
            raise row.error(self.header.covariates.get(error.covariate, error.covariate), str(error)) from None

    def _covariate_changes(self, row: _Row, patient: _Patient, time: float, previous: float | None) -> None:
        if previous is None:
            return  # the patient's first row: its covariates are the record's start values
        values = self._checked(row, self._covariate_values(row, required=False), partial=True)
        changed = {name: value for name, value in values.items() if value != patient.current[name]}
        if changed:
            start = time if self.convention == "locf" else previous
            patient.events.append(CovariateChange(start, changed))
            patient.current.update(changed)

    # ------------------------------------------------------------------ doses

    def _not_a_dose(self, row: _Row, evid: int, amount: float) -> None:
        if amount != 0:
            raise row.error("AMT", f"column AMT = {amount:g} on a row that is not a dose (EVID {evid})")
        for item in _DOSE_ONLY:
            value = row.number(item, 0.0)
            if value != 0:
                raise row.error(item, f"column {item} = {value:g} on a row that is not a dose (EVID {evid})")
        if evid != 0 and row.text("CMT").startswith("-"):  # on an other or reset row a CMT does nothing, unless it is < 0
            raise row.error("CMT", f"column CMT = {row.text('CMT')} (NONMEM: turn a compartment off) is not supported")

    def _dose(self, row: _Row, patient: _Patient, time: float, evid: int, amount: float, mdv: int | None) -> None:
        if mdv == 0:
            raise row.error("MDV", f"column MDV = 0 on a dose row (EVID {evid}): a NONMEM dose record has MDV 1")
        if amount <= 0:
            raise row.error("AMT", f"column AMT must be > 0 for a dose (EVID {evid}), got {amount:g}")
        duration = self._duration(row, amount)
        compartment = self._compartment(row, "dose")
        ss = row.code("SS", 0, (0, 1, 2), "0 none, 1 steady state, 2 steady state added to what the body holds")
        interval = row.number("II", 0.0)
        additional = row.code("ADDL", 0, range(10**6), "a count of additional doses, 0 or more")
        if interval < 0:
            raise row.error("II", f"column II = {interval:g} must be ≥ 0 h")
        if (ss or additional) and interval <= 0:
            raise row.error("II", f"column II must be > 0 h with SS = {ss}, ADDL = {additional}; got {interval:g}")
        if interval > 0 and not (ss or additional):
            raise row.error("II", f"column II = {interval:g} on a dose with neither SS nor ADDL: it would have no effect")
        if evid == 4:
            self._reset(row, patient, time)
        if ss:
            dose = SteadyState(time, amount, interval, compartment, duration, additive=ss == 2)
            try:
                check_steady_state(self.model, dose)
            except ValueError as error:
                raise row.error("SS", f"column SS = {ss}: {error}") from None
            self._refuse_earlier_reading(row, patient, "steady-state dose")
            patient.same_time.append(("ss", row.line, None))
        else:
            dose = Dose(time, amount, compartment, duration)
        patient.events.append(dose)
        if duration == 0:
            patient.same_time.append(("bolus", row.line, compartment))
        patient.events.extend(Dose(time + k * interval, amount, compartment, duration) for k in range(1, additional + 1))

    def _duration(self, row: _Row, amount: float) -> float:
        rate, duration = row.number("RATE", 0.0), row.number("DUR", 0.0)
        if rate in (-1.0, -2.0):
            what = "rate" if rate == -1 else "duration"
            raise row.error("RATE", f"column RATE = {rate:g} asks for an infusion {what} modelled by the model, and model "
                                    f"{self.model.name!r} declares none (the engine has no modelled rates or durations)")
        if rate < 0:
            raise row.error("RATE", f"column RATE = {rate:g}: a rate is ≥ 0 mg/h (or −1 / −2, a modelled rate / duration)")
        if duration < 0:
            raise row.error("DUR", f"column DUR = {duration:g} must be ≥ 0 h")
        if rate > 0 and duration > 0:
            raise row.error("DUR", "columns RATE and DUR both set on a dose: give one")
        return amount / rate if rate > 0 else duration

    def _compartment(self, row: _Row, role: str) -> int | None:
        """A dose's compartment index (the model's default where CMT is empty or 0), or on a
        reading row the compartment read (None where CMT is empty or 0)."""
        text = row.text("CMT")
        names = {name.upper(): i for i, name in enumerate(self.model.compartments)}
        if text.upper() in names:
            return names[text.upper()]
        n = self.model.n_compartments
        try:
            value = row.number("CMT", 0.0)
        except NonmemDataError:
            value = math.nan
        if not value.is_integer():
            raise row.error("CMT", f"column CMT = {text!r} is neither a compartment number 1..{n} nor a name "
                                   f"({', '.join(self.model.compartments)})")
        if value == 0:
            return self.model.dose_compartment if role == "dose" else None
        if value < 0:
            raise row.error("CMT", f"column CMT = {value:g} (NONMEM: turn a compartment off) is not supported")
        if not 1 <= value <= n:
            raise row.error("CMT", f"column CMT = {value:g} out of range 1..{n} for model {self.model.name!r} "
                                   f"({', '.join(self.model.compartments)})")
        return int(value) - 1

    def _reset(self, row: _Row, patient: _Patient, time: float) -> None:
        self._refuse_earlier_reading(row, patient, "reset")
        patient.events.append(Reset(time))
        patient.same_time.append(("reset", row.line, None))

    def _refuse_earlier_reading(self, row: _Row, patient: _Patient, what: str) -> None:
        earlier = [r for kind, r, _ in patient.same_time if kind == "reading"]
        if earlier:
            raise row.error("TIME", f"a {what} at the TIME of the reading on row {earlier[0]}: NONMEM predicts that reading "
                                    f"before the {what}, this engine after it; give the reading an earlier TIME or its row after this one")

    # ------------------------------------------------------------------ readings

    def _reading(self, row: _Row, patient: _Patient, time: float) -> None:
        analyte = self._analyte(row)
        reads = self.reads[analyte]
        for kind, earlier, compartment in patient.same_time:
            if kind == "bolus" and reads[compartment]:
                raise row.error("TIME", f"a reading at the TIME of the bolus on row {earlier} into "
                                        f"{self.model.compartments[compartment]!r}, which analyte {self.model.analytes[analyte].name!r} "
                                        "reads: NONMEM predicts it after the dose, this engine before (a trough); put the reading's "
                                        "row before the dose's")
        patient.events.append(self._value(row, time, analyte))
        patient.same_time.append(("reading", row.line, analyte))

    def _analyte(self, row: _Row) -> int:
        analytes = self.model.analytes
        chosen = self._dvid(row)
        compartment = self._compartment(row, "reading") if row.text("CMT") else None
        if compartment is not None:
            readers = np.flatnonzero(self.reads[:, compartment])
            where = f"column CMT = {row.text('CMT')} ({self.model.compartments[compartment]!r})"
            if chosen is not None and chosen not in readers:
                raise row.error("CMT", f"{where}: analyte {analytes[chosen].name!r} (DVID) does not read that compartment")
            if chosen is None and len(readers) != 1:
                found = ", ".join(repr(analytes[a].name) for a in readers) or "none"
                raise row.error("CMT", f"{where} is read by {len(readers)} analytes of model {self.model.name!r} ({found}); "
                                       "say which with a DVID column")
            chosen = int(readers[0]) if chosen is None else chosen
        if chosen is None:
            if len(analytes) > 1:
                raise row.error("DVID", f"model {self.model.name!r} has analytes {', '.join(a.name for a in analytes)}: "
                                        "say which one a reading is with a DVID (or CMT) column")
            chosen = 0
        return chosen

    def _dvid(self, row: _Row) -> int | None:
        text = row.text("DVID")
        if not text:
            return None
        analytes = self.model.analytes
        names = {a.name.upper(): i for i, a in enumerate(analytes)}
        if text.upper() in names:
            return names[text.upper()]
        value = row.number("DVID")
        if not value.is_integer() or not 1 <= value <= len(analytes):
            raise row.error("DVID", f"column DVID = {text!r} out of range 1..{len(analytes)} "
                                    f"(or a name: {', '.join(a.name for a in analytes)})")
        return int(value) - 1

    def _flag_column(self) -> str | None:
        return next((item for item in ("CENS", "BLQ") if item in self.header.items), None)

    def _censoring_flag(self, row: _Row) -> int:
        column = self._flag_column()
        if column is None:
            return 0
        value = row.number(column, 0.0)
        if value == -1:
            raise row.error(column, f"column {column} = -1 (a reading above an upper limit) is not supported")
        return row.code(column, 0, (0, 1), "0 a value, 1 below the limit of quantification")

    def _value(self, row: _Row, time: float, analyte: int) -> Reading:
        flag = self._censoring_flag(row)
        lloq = row.number("LLOQ", math.nan) if row.text("LLOQ") else None
        if lloq is not None and not lloq > 0:
            raise row.error("LLOQ", f"column LLOQ = {lloq:g} must be > 0")
        if flag == 1:
            return Reading(time, lloq if lloq is not None else row.number("DV"), analyte, True)
        value = row.number("DV")
        if lloq is not None and value < lloq:
            if self._flag_column() is not None:
                raise row.error(self._flag_column(), f"column {self._flag_column()} = 0 but DV = {value:g} is below LLOQ = {lloq:g}")
            return Reading(time, lloq, analyte, True)
        return Reading(time, value, analyte, False)


@functools.lru_cache(maxsize=None)
def analyte_compartments(model: Model) -> np.ndarray:
    """(A, n) bool: the compartments each analyte's prediction reads (the sparsity of its
    gradient at the typical parameters and a generic state, the start amounts + 0.37)."""
    params = model.parameters(jnp.asarray(model.typical_log_params(), jnp.float32))
    x = model.amounts_at_start(jnp.float32) + 0.37
    gradients = [np.asarray(jax.grad(lambda amounts, a=a: a.predict(params, amounts))(x)) for a in model.analytes]
    return np.stack([(g != 0) | ~np.isfinite(g) for g in gradients])
