"""Conversion of UCUM units to an analyte's canonical unit, by a units library.

UCUM strings are parsed by `ucumvert` into `pint` quantities; pint does the arithmetic.
The only rule applied here by hand is UCUM's own: an annotation in curly braces
(`{INR}`, `{cells}`) has no dimension and multiplies by one (UCUM §4.4.3.2).
Factors are cached per (unit, canonical unit) pair, so the library is asked once.
"""

from __future__ import annotations

import functools
import re
import threading

_ANNOTATION = re.compile(r"\{[^{}]*\}")
_lock = threading.Lock()


class UnitError(ValueError):
    """A unit that UCUM does not define, or that cannot be converted to the target."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason  # "unknown_unit" or "incompatible_unit"
        self.detail = detail


@functools.cache
def _registry():
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _strip_annotations(ucum: str) -> str:
    stripped = _ANNOTATION.sub("", ucum)
    # "{INR}" alone means 1; "mg{total}/L" means mg/L; "/{cells}" would leave "/" alone.
    stripped = stripped.replace("(/", "(1/")
    if stripped in ("", "/"):
        return "1"
    if stripped.startswith("/"):
        stripped = "1" + stripped
    return stripped


@functools.lru_cache(maxsize=1024)
def conversion_factor(unit: str, canonical: str) -> float:
    """Multiplier taking a value in `unit` to `canonical`; raises UnitError."""
    if unit == canonical:
        return 1.0
    ureg = _registry()
    with _lock:  # the parser is not documented as thread-safe
        try:
            source = ureg.from_ucum(_strip_annotations(unit))
        except Exception as err:  # the parser raises several unrelated types
            raise UnitError("unknown_unit", f"{unit!r} is not a valid UCUM unit") from err
        target = ureg.from_ucum(_strip_annotations(canonical))
        try:
            return float((1.0 * source).to(target).magnitude)
        except Exception as err:
            raise UnitError(
                "incompatible_unit", f"{unit!r} cannot be converted to {canonical!r}"
            ) from err


def canonical_value(value: float, unit: str, canonical: str) -> float:
    return value * conversion_factor(unit, canonical)
