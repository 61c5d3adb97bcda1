"""Is a reading plausible under the posterior predictive? (sensor-fault and misfit checks)

For a reading y of an analyte at time t, with particles propagated to t (doses included):

    F(y) = P(Y ≤ y) = Σ_i w_i · P_ε(Y ≤ y | f(θ_i, x_i(t)))      (the predictive PIT)

and the two-sided tail probability 2·min(F, 1 − F). Under a calibrated model F is uniform
on (0, 1), so a threshold α flags a fraction α of good readings; a reading with tail
probability 1e-4 is an implausible reading or a sensor fault. The sign of F − ½ is the
direction of the prediction error (a run of one sign = model misfit, see :mod:`.alerts`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from assimilation import Dose, Model
from assimilation.dosing import DoseTable

from .forecast import history_table, particle_cache
from .sample import PosteriorSample, normalised_weights

__all__ = ["ReadingCheck", "advance", "check_reading", "predictive_cdf"]


class ReadingCheck(NamedTuple):
    pit: float  # F(y)
    tail_probability: float  # 2 min(F, 1 − F)
    predicted_median: float  # weighted median of the predicted analyte (no residual error)

    @property
    def sign(self) -> int:
        """+1 reading above the prediction, −1 below, 0 exactly central."""
        return int(self.pit > 0.5) - int(self.pit < 0.5)


def _advance(model: Model, sample: PosteriorSample, history: DoseTable, t) -> PosteriorSample:
    cache = particle_cache(model, sample)

    def one(lp, c, x):
        params = model.parameters(lp)
        F, lag = model.dose_attributes(params, x.dtype)
        return model.dynamics.propagate(params, c, x, sample.time, t, history, F, lag)

    amounts = jax.vmap(one)(sample.log_params, cache, sample.amounts)
    return sample._replace(amounts=amounts, time=jnp.asarray(t, sample.amounts.dtype))


_advance_jit = jax.jit(_advance, static_argnums=0)


def advance(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, t: float) -> PosteriorSample:
    """The sample's amounts carried forward to time ``t`` ≥ ``sample.time`` (weights unchanged)."""
    dtype = sample.amounts.dtype
    return _advance_jit(model, sample, history_table(model, history, dtype), jnp.asarray(t, dtype))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _cdf_and_median(model: Model, analyte: int, sample: PosteriorSample, value):
    error = model.analytes[analyte].error
    f = jax.vmap(lambda lp, x: model.analytes[analyte].predict(model.parameters(lp), x))(sample.log_params, sample.amounts)
    w = normalised_weights(sample.log_weights)
    cdf = jnp.sum(w * jnp.exp(error.log_cdf(value, f)))
    order = jnp.argsort(f)
    median = f[order][jnp.searchsorted(jnp.cumsum(w[order]), 0.5)]
    return cdf, median


def predictive_cdf(model: Model, sample: PosteriorSample, analyte: int | str, value: float) -> float:
    """F(y) with the sample's amounts at the reading time."""
    return float(_cdf_and_median(model, model.analyte_index(analyte), sample, jnp.asarray(value, sample.amounts.dtype))[0])


def check_reading(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, time: float,
                  analyte: int | str, value: float) -> ReadingCheck:
    """PIT and tail probability of a reading at ``time`` (before it is assimilated)."""
    at = advance(model, sample, history, time) if time != float(sample.time) else sample
    cdf, median = _cdf_and_median(model, model.analyte_index(analyte), at, jnp.asarray(value, at.amounts.dtype))
    cdf = float(cdf)
    return ReadingCheck(cdf, 2.0 * min(cdf, 1.0 - cdf), float(median))
