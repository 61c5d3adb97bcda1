"""Exposure metrics and targets.

A :class:`Metric` reduces a trajectory on the forecast grid to one number per particle over
a window [start, start + window) (h after the decision time). The implementations here wrap
the model library's pure functions (:mod:`assimilation.models.exposure`), so a model file's
own metric functions plug in the same way (:class:`WindowFunction`).

A :class:`Target` is a metric with a therapeutic range and an optional toxicity threshold:
PTA = P(low ≤ metric ≤ high), risk = P(metric > toxic_above) + P(metric < toxic_below).

Vancomycin (:data:`VANCOMYCIN_AUC24`): AUC24 400-600 mg·h/L, assuming MIC 1 mg/L by broth
microdilution; AUC above 600 mg·h/L is the threshold associated with acute kidney injury.
Rybak MJ, Le J, Lodise TP, et al. Therapeutic monitoring of vancomycin for serious
methicillin-resistant Staphylococcus aureus infections: a revised consensus guideline and
review by the ASHP, IDSA, PIDS and SIDP. Am J Health Syst Pharm 2020;77(11):835-864.
Trough and peak are reported beside it (the 2020 guideline no longer targets troughs).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

from jaxtyping import Array, Float

from assimilation.models import exposure

__all__ = ["Metric", "AreaUnderCurve", "Trough", "Peak", "Nadir", "TimeInRange", "TimeInRangeBelowCeiling", "WindowFunction", "Target",
           "VANCOMYCIN_AUC24", "VANCOMYCIN_METRICS", "describe_metric", "describe_pta", "describe_window", "display_unit", "targets_from_model_module"]


class Metric(Protocol):
    """``metric(times, values, start) -> (...)``: one number per trajectory over
    [start, start + window]; ``times`` (T,) absolute h, ``values`` (..., T).

    A metric may set ``linear = True`` when it is a linear functional of the trajectory
    (AUC): candidates are then scored without building their trajectories."""

    name: str
    unit: str
    window: float

    def __call__(self, times: Float[Array, " T"], values: Float[Array, "... T"], start) -> Float[Array, "..."]: ...


class AreaUnderCurve(NamedTuple):
    """∫ C dt over the window (trapezoid on the grid), mg·h/L for mg/L."""

    window: float = 24.0
    name: str = "auc24"
    unit: str = "mg*h/L"
    linear: bool = True  # a linear functional of the trajectory: superposes like the trajectory

    def __call__(self, times, values, start):
        return exposure.area_under_curve(times, values, start, start + self.window)


class Trough(NamedTuple):
    """Lowest value in the window: the pre-dose trough of an intermittent regimen."""

    window: float = 24.0
    name: str = "trough"
    unit: str = "mg/L"

    def __call__(self, times, values, start):
        return exposure.nadir(times, values, start, start + self.window)


class Peak(NamedTuple):
    """Highest grid value in the window (end of infusion when infusions end on the grid)."""

    window: float = 24.0
    name: str = "peak"
    unit: str = "mg/L"

    def __call__(self, times, values, start):
        return exposure.peak(times, values, start, start + self.window)


class Nadir(NamedTuple):
    """Lowest value in the window (e.g. ANC nadir of a cycle)."""

    window: float = 504.0
    name: str = "nadir"
    unit: str = "10*9/L"

    def __call__(self, times, values, start):
        return exposure.nadir(times, values, start, start + self.window)


class TimeInRange(NamedTuple):
    """Fraction of the window with low ≤ value ≤ high (Rosendaal's interpolation, e.g. INR 2-3)."""

    low: float
    high: float
    window: float = 168.0
    name: str = "time_in_range"
    unit: str = "1"

    def __call__(self, times, values, start):
        return exposure.fraction_of_time_in_range(times, values, self.low, self.high, start, start + self.window)


class TimeInRangeBelowCeiling(NamedTuple):
    """Time in range minus 1 if the value exceeds ``ceiling`` anywhere in the window:
    m = TTR − 1[max > ceiling] ∈ [−1, 1]. So E[m] = E[TTR] − P(max > ceiling) (an expected
    time in range with the excursion above the ceiling as a penalty of one full window),
    P(m ≥ x) for x ≥ 0 is P(TTR ≥ x and never above the ceiling), P(m < 0) = P(above the
    ceiling). For INR: range 2-3, ceiling 4."""

    low: float
    high: float
    ceiling: float
    window: float = 168.0
    name: str = "time_in_range"
    unit: str = "1"

    def __call__(self, times, values, start):
        ttr = exposure.fraction_of_time_in_range(times, values, self.low, self.high, start, start + self.window)
        above = exposure.peak(times, values, start, start + self.window) > self.ceiling
        return ttr - above.astype(ttr.dtype)


class WindowFunction(NamedTuple):
    """Adapter for a model file's metric ``function(times, values, start, end)``."""

    function: Callable
    window: float
    name: str
    unit: str

    def __call__(self, times, values, start):
        return self.function(times, values, start, start + self.window)


class Target(NamedTuple):
    """A therapeutic range of a metric of one analyte; ``source`` cites where it comes from."""

    metric: Metric
    low: float
    high: float
    toxic_above: float | None = None
    analyte: int | str = 0
    source: str = ""
    toxic_below: float | None = None  # e.g. an ANC nadir below the grade 4 limit
    risk_label: str = ""  # what the risk is the probability of, a clause (default: "<metric> exceeds <toxic_above>")


RYBAK_2020 = "Rybak MJ et al. Am J Health Syst Pharm 2020;77:835-864 (ASHP/IDSA/PIDS/SIDP), MIC 1 mg/L"

VANCOMYCIN_AUC24 = Target(AreaUnderCurve(24.0), 400.0, 600.0, toxic_above=600.0, analyte=0, source=RYBAK_2020)
VANCOMYCIN_METRICS = (AreaUnderCurve(24.0), Trough(24.0), Peak(24.0))


DISPLAY_UNITS = {"mg*h/L": "mg·h/L", "mg.h/L": "mg·h/L", "10*9/L": "×10⁹/L", "{INR}": "", "1": ""}
"""UCUM (and this module's) unit codes as a clinician reads them."""


def display_unit(unit: str) -> str:
    return DISPLAY_UNITS.get(unit, unit)


def describe_window(hours: float) -> str:
    """A window's length as a clinician says it: "the next 24 h", "the next 7 days"."""
    return f"the next {hours / 24:g} days" if hours >= 48 and hours % 24 == 0 else f"the next {hours:g} h"


METRIC_LABELS = {"auc24": "AUC24", "time_in_range": "time in range", "nadir": "nadir", "trough": "trough", "peak": "peak"}


def describe_metric(target: Target) -> str:
    """The metric as a clinician names it ("AUC24", "time in range", "ANC nadir")."""
    label = METRIC_LABELS.get(target.metric.name, target.metric.name)
    return f"{str(target.analyte).upper()} {label}" if label == "nadir" and isinstance(target.analyte, str) else label


def describe_pta(target: Target) -> str:
    """What the PTA of ``target`` is the probability of, in words."""
    metric, analyte = target.metric, str(target.analyte).upper() if isinstance(target.analyte, str) else "the level"
    if isinstance(metric, TimeInRangeBelowCeiling):
        return (f"{analyte} in {metric.low:g}-{metric.high:g} for at least {target.low:.0%} of the time, "
                f"never above {metric.ceiling:g}")
    if isinstance(metric, AreaUnderCurve):
        return f"AUC{metric.window:g} in {target.low:g}-{target.high:g} mg·h/L"
    if isinstance(metric, Nadir):
        return f"{analyte} nadir in {target.low:g}-{target.high:g} {display_unit(metric.unit)}"
    return f"{metric.name} in {target.low:g}-{target.high:g} {display_unit(metric.unit)}".rstrip()


def targets_from_model_module(module, analyte: int | str = 0) -> list[Target]:
    """Targets from a model file's ``TARGETS = {"auc24": (low, high), ...}``; AUC-type names
    "aucNN" become an NN-hour :class:`AreaUnderCurve`, the upper bound doubling as the
    toxicity threshold. Other names need an explicit :class:`Target`."""
    out = []
    for name, (low, high) in getattr(module, "TARGETS", {}).items():
        if name.startswith("auc") and name[3:].isdigit():
            metric = AreaUnderCurve(float(name[3:]), name)
        else:
            raise ValueError(f"no built-in metric for target {name!r}; construct a Target for it")
        out.append(Target(metric, float(low), float(high), float(high), analyte, (module.__doc__ or "").strip().splitlines()[0]))
    return out
