"""Population parameters: typical values, covariate effects, between-patient variability.

An individual's parameter vector lives on the log scale::

    log θ_i = log θ_typical + Σ_effects f(covariates_i) + η_i,     η_i ~ N(0, Ω)

so θ_i is log-normal around the covariate-adjusted typical value. ``omega`` (Ω) is a full
covariance matrix on the log scale; a zero row/column marks a parameter that is fixed (known
exactly for every patient, e.g. bioavailability F = 1). Units are those of the model
(time h, amount mg, volume L, clearance L/h).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence

import numpy as np
from jaxtyping import Float

__all__ = [
    "CovariateEffect",
    "PowerEffect",
    "ExponentialEffect",
    "CategoricalEffect",
    "Population",
    "covariate_shift",
    "prior_mean",
]


class CovariateEffect(Protocol):
    """A multiplicative covariate effect, returned as its log: log θ_i += ``log_effect(value)``."""

    parameter: str
    covariate: str

    def log_effect(self, value: float) -> float: ...


class PowerEffect(NamedTuple):
    """θ ∝ (value / reference) ** exponent — allometry, e.g. CL ∝ (WT/70)^0.75."""

    parameter: str
    covariate: str
    reference: float
    exponent: float

    def log_effect(self, value: float) -> float:
        return self.exponent * float(np.log(value / self.reference))


class ExponentialEffect(NamedTuple):
    """θ ∝ exp(coefficient · (value − reference)) — e.g. age effects."""

    parameter: str
    covariate: str
    reference: float
    coefficient: float

    def log_effect(self, value: float) -> float:
        return self.coefficient * (float(value) - self.reference)


class CategoricalEffect(NamedTuple):
    """θ ∝ factors[level]; levels missing from ``factors`` have factor 1 (the reference level)."""

    parameter: str
    covariate: str
    factors: tuple[tuple[object, float], ...]  # ((level, factor), ...): hashable, unlike a dict

    def log_effect(self, value: object) -> float:
        factor = dict(self.factors).get(value, 1.0)
        return float(np.log(factor))


class Population(NamedTuple):
    """Population distribution of the individual parameters.

    Attributes:
        names: parameter names; their order is the order of the log-parameter vector.
        typical: typical values (natural units) at the reference covariates, shape (p,).
        omega: covariance of η on the log scale, shape (p, p); zero variance = fixed parameter.
        effects: covariate effects, applied in order.
    """

    names: tuple[str, ...]
    typical: Float[np.ndarray, " p"]
    omega: Float[np.ndarray, "p p"]
    effects: tuple[CovariateEffect, ...] = ()

    @property
    def n_parameters(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def omega_sqrt(self) -> Float[np.ndarray, "p p"]:
        """A square root L with L Lᵀ = Ω that tolerates fixed (zero-variance) parameters."""
        values, vectors = np.linalg.eigh(np.asarray(self.omega, dtype=np.float64))
        return vectors * np.sqrt(np.clip(values, 0.0, None))

    def random_mask(self) -> np.ndarray:
        """True where the parameter varies between patients (Ω_ii > 0)."""
        return np.diag(np.asarray(self.omega)) > 0


def covariate_shift(population: Population, covariates: dict) -> Float[np.ndarray, " p"]:
    """Σ log-effects of a patient's covariates, shape (p,). Missing covariates raise KeyError
    naming the covariate, since silently using the reference value would bias the prior."""
    shift = np.zeros(population.n_parameters)
    for effect in population.effects:
        if effect.covariate not in covariates:
            raise KeyError(f"covariate {effect.covariate!r} needed by the effect on {effect.parameter!r} is missing")
        shift[population.index(effect.parameter)] += effect.log_effect(covariates[effect.covariate])
    return shift


def prior_mean(population: Population, covariates: dict) -> Float[np.ndarray, " p"]:
    """Prior mean (= mode) of log θ for a patient: log θ_typical + covariate shift."""
    return np.log(np.asarray(population.typical, dtype=np.float64)) + covariate_shift(population, covariates)


def as_covariate_list(covariates: dict | Sequence[dict] | None) -> list[dict]:
    """One dict per patient; a single dict means one patient."""
    if covariates is None:
        return [{}]
    if isinstance(covariates, dict):
        return [covariates]
    return [dict(c) for c in covariates]
