"""Typed covariates: what a model needs to know about a patient, with units and allowed values.

A model declares each covariate it uses (``Model.covariates``) as

* :class:`Continuous` — a number in a unit (UCUM) within a plausible range, e.g. body weight
  in kg within 2-350;
* :class:`Categorical` — one of a fixed set of levels, e.g. a CYP2C9 genotype or dialysis
  (0 / 1), with optional aliases that mean the same level ("A/G" for "G/A").

:func:`check_covariates` turns what a caller sent (JSON numbers and strings) into the values
the model computes with, or raises :class:`CovariateError` naming the covariate and what it
allows. Nothing is silently dropped or defaulted: a covariate the model does not know, one it
needs and did not get, and a value outside its range or levels are all errors, because the
prior would otherwise be the reference patient's without anyone noticing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Union

__all__ = ["Continuous", "Categorical", "Covariate", "CovariateError", "check_covariates", "describe"]

Level = Union[str, int]


class CovariateError(ValueError):
    """A covariate value the model cannot use. ``covariate`` names it; ``allowed`` says what would do."""

    def __init__(self, covariate: str, message: str, allowed: str = ""):
        super().__init__(message)
        self.covariate, self.allowed = covariate, allowed


class Continuous(NamedTuple):
    """A numeric covariate in ``unit`` (UCUM), accepted within [``low``, ``high``].

    The bounds are plausibility limits (a value outside is a data-entry error, not a patient),
    not the range of the data the model was built on: that is ``studied`` (low, high), shown to
    the clinician as an extrapolation warning where the source reports it.
    """

    name: str
    unit: str
    low: float
    high: float
    description: str = ""
    studied: tuple[float, float] | None = None

    @property
    def allowed(self) -> str:
        return f"a number from {self.low:g} to {self.high:g} {self.unit}"

    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CovariateError(self.name, f"covariate {self.name!r} must be {self.allowed}; got {value!r}", self.allowed)
        number = float(value)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise CovariateError(self.name, f"covariate {self.name!r} = {value!r} is outside its range: {self.allowed}", self.allowed)
        return number

    def outside_studied(self, value: float) -> bool:
        return self.studied is not None and not self.studied[0] <= value <= self.studied[1]


class Categorical(NamedTuple):
    """A covariate with a fixed set of ``levels`` (strings, or integer codes such as 0 / 1).

    ``aliases`` ((spelling, level), ...) are other spellings of a level, e.g. ("A/G", "G/A").
    Integer levels also accept the same number as a float (a JSON 1.0 is level 1)."""

    name: str
    levels: tuple[Level, ...]
    description: str = ""
    aliases: tuple[tuple[str, Level], ...] = ()

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(repr(level) for level in self.levels)

    def check(self, value: object) -> Level:
        if isinstance(value, str):
            level = dict(self.aliases).get(value, value)
            if level in self.levels:
                return level
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            if int(value) in self.levels:
                return int(value)
        raise CovariateError(self.name, f"covariate {self.name!r} = {value!r} is not a level it has: {self.allowed}", self.allowed)


Covariate = Union[Continuous, Categorical]


def describe(covariate: Covariate) -> dict:
    """The declaration as plain data (for the API and the dashboard's forms)."""
    if isinstance(covariate, Continuous):
        return {"name": covariate.name, "type": "continuous", "unit": covariate.unit, "low": covariate.low,
                "high": covariate.high, "description": covariate.description,
                "studied": None if covariate.studied is None else list(covariate.studied)}
    return {"name": covariate.name, "type": "categorical", "levels": list(covariate.levels),
            "description": covariate.description, "aliases": {spelling: level for spelling, level in covariate.aliases}}


def check_covariates(declared: Sequence[Covariate], values: Mapping[str, object], *, partial: bool = False) -> dict[str, object]:
    """The values the model computes with, checked against ``declared``.

    Raises :class:`CovariateError` for an undeclared name, a missing declared covariate (unless
    ``partial``: a change of some covariates from a given time on), or a value outside its
    range or levels. Returns the values in declaration order, normalised (floats; levels
    with aliases resolved)."""
    by_name = {c.name: c for c in declared}
    unknown = [name for name in values if name not in by_name]
    if unknown:
        names = ", ".join(by_name) or "none"
        raise CovariateError(unknown[0], f"unknown covariate {unknown[0]!r}; this model's covariates are: {names}",
                             f"one of the covariates {names}")
    if not partial:
        missing = [name for name in by_name if name not in values]
        if missing:
            covariate = by_name[missing[0]]
            raise CovariateError(covariate.name, f"covariate {covariate.name!r} is missing: {covariate.allowed}", covariate.allowed)
    return {c.name: c.check(values[c.name]) for c in declared if c.name in values}
