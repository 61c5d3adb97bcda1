"""Bayesian data assimilation for streaming model-informed precision dosing.

Model API: :mod:`.parameters`, :mod:`.structure`, :mod:`.residuals`, :mod:`.dosing`, :mod:`.model`.
Online API: ``init``, ``update``, ``predict``, ``particles``, ``to_bytes``, ``from_bytes``
(:mod:`.online`), with methods "pf" (particle filter), "enkf" (ensemble adjustment Kalman
filter), "map" (MAP + Laplace). Forward simulation: :mod:`.simulate`. Offline one-step-ahead
forecasts of recorded patients: :func:`.replay.replay`. See docs/ASSIMILATION.md.
"""

from .covariates import Categorical, Continuous, CovariateError
from .dosing import Dose
from .model import Analyte, Model, Sensor, load_model
from .parameters import CategoricalEffect, ExponentialEffect, Population, PowerEffect, Typical
from .residuals import Additive, Combined, LogNormal, Proportional
from .structure import LinearCompartments, OdeCompartments

__all__ = [
    "Additive", "Analyte", "Categorical", "CategoricalEffect", "Combined", "Continuous", "CovariateError", "Dose",
    "ExponentialEffect",
    "LinearCompartments", "LogNormal", "Model", "OdeCompartments", "Population", "PowerEffect",
    "Proportional", "Sensor", "Typical", "load_model",
]
