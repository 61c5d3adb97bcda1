"""Covariate effects that published models use but :mod:`assimilation.parameters` lacks.

They follow the :class:`assimilation.parameters.CovariateEffect` protocol (``parameter``,
``covariate``, ``log_effect(value)``), so a :class:`~assimilation.Population` accepts them
like the built-in effects. A covariate model that one-covariate factors cannot state (a
typical value additive in two covariates, an indicator, a piecewise form) is an expression:
:class:`assimilation.parameters.Typical`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from assimilation.parameters import linear

__all__ = ["LinearEffect"]


class LinearEffect(NamedTuple):
    """θ ∝ max(1 + slope · (value − reference), floor).

    Examples: vancomycin CL ∝ 1 + 0.0154 (CrCL − 66) (Thomson 2009); S-warfarin
    CL ∝ 1 − 0.0091 (age − 71) (Hamberg 2007). The floor keeps θ positive for covariate
    values far outside the data the model was built on.
    """

    parameter: str
    covariate: str
    reference: float
    slope: float
    floor: float = 0.05

    def log_effect(self, value: float) -> float:
        return float(np.log(linear(value, self.reference, self.slope, self.floor)))
