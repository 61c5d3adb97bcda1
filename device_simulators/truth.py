"""The interface a virtual-cohort truth model implements, so that library models plug in.

A truth model is the simulator's ground truth, not the filter's model: it may be richer
than what the filter assumes (that is how model misspecification is tested). It says
how patients vary (covariates, true parameters), what they are prescribed, and what the
latent level of each analyte really is under the doses they really got.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from device_simulators.dosing import AdministeredDose, ScheduledDose


@runtime_checkable
class TruthModel(Protocol):
    name: str
    """Short name used on the command line, e.g. "vancomycin-1cmt"."""
    drug: str
    """Drug name on the wire (a key of wire.DRUGS)."""
    route: str
    """Route the regimen uses: "iv_infusion" means a smart pump, "oral" an e-pillbox."""
    plasma_analyte: str
    """Analyte code of the drug's plasma level (the point-of-care meter and biosensor source)."""
    analytes: tuple[str, ...]
    """Analyte codes `trajectories` returns, each in its canonical unit (wire.ANALYTES)."""

    def sample_covariates(self, rng: np.random.Generator) -> dict[str, float]:
        """A patient's covariates (age, weight, serum creatinine, ...), units in the key names."""
        ...

    def sample_parameters(self, covariates: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
        """The patient's true model parameters given the covariates (population + individual variability)."""
        ...

    def regimen(self, covariates: Mapping[str, float], start_t: float, end_t: float) -> list[ScheduledDose]:
        """The prescribed doses over [start_t, end_t), s since epoch."""
        ...

    def trajectories(
        self,
        parameters: Mapping[str, float],
        covariates: Mapping[str, float],
        doses: Sequence[AdministeredDose],
        times: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Latent true value of each analyte at `times` (s since epoch) under the administered doses."""
        ...
