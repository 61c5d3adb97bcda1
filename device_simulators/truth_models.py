"""The truth models a run can name on the command line.

Library models (`assimilation.load_model`) are preferred: the cohort is then drawn from the
same model family the filter uses. "vancomycin" is the library's own vancomycin model when
the library has one, and otherwise its two-compartment vancomycin example (Goti et al. 2018
parameters); the choice is the one line in `_vancomycin`. "vancomycin-1cmt" is a small
self-contained model (closed form, no JAX) for tests and for runs that must not need the
library.
"""

from __future__ import annotations

from collections.abc import Callable

from device_simulators.truth import TruthModel
from device_simulators.vancomycin_model import OneCompartmentVancomycin


def _library(name: str) -> Callable[[], TruthModel]:
    def make() -> TruthModel:
        from device_simulators.library_model import LibraryTruthModel

        return LibraryTruthModel(name)

    return make


def _vancomycin() -> TruthModel:
    try:
        return _library("vancomycin")()
    except ValueError:  # the library has no vancomycin model yet
        return _library("two_compartment_infusion")()


TRUTH_MODELS: dict[str, Callable[[], TruthModel]] = {
    "vancomycin": _vancomycin,
    "vancomycin-1cmt": OneCompartmentVancomycin,
    "two_compartment_infusion": _library("two_compartment_infusion"),
    "vancomycin_thomson": _library("vancomycin_thomson"),
    "docetaxel_friberg": _library("docetaxel_friberg"),
    "warfarin_hamberg": _library("warfarin_hamberg"),
}


def truth_model(name: str) -> TruthModel:
    try:
        make = TRUTH_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown truth model {name!r}; known: {', '.join(sorted(TRUTH_MODELS))}") from None
    return make()
