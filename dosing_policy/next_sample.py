"""Next-sample suggestion: when would one more point-of-care level most reduce the
uncertainty of the target metric?

For a candidate sampling time s, a reading y_s = f_s(θ) + ε (the analyte's residual error)
would reweight the particles to w_i(y) ∝ w_i · p(y | f_s(θ_i)). The expected posterior
variance of the metric m (e.g. next-day AUC24 under the planned regimen) is

    E_y[ Var(m | y_s) ] = ∫ p(y_s) Var_{w(y)}(m) dy_s,

estimated by simulating readings from the posterior predictive: J "true" particles drawn by
systematic resampling of the weights, M residual draws each (the same draws at every s, so
candidate times are compared on common random numbers). The suggestion is the s with the
smallest expected posterior variance; the expected variance reduction is
Var(m) − E_y[Var(m | y_s)]. Cost O(S · J · M · N), vectorised over particles.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from assimilation import Dose, Model
from assimilation.dosing import DoseTable

from .attainment import weighted_mean_variance
from .forecast import Grid, forecast
from .metrics import Target
from .regimen import Regimen
from .sample import PosteriorSample

__all__ = ["SampleSuggestion", "suggest_sample_time", "expected_posterior_variance"]


class SampleSuggestion(NamedTuple):
    time: float  # h (absolute) of the suggested sample
    times: np.ndarray  # candidate times (S,)
    expected_variance: np.ndarray  # E_y[Var(m | y_s)] per candidate time, (S,)
    prior_variance: float  # Var(m) now
    metric: str

    @property
    def reduction(self) -> float:
        """Expected variance reduction at the suggested time, as a fraction of Var(m)."""
        return 1.0 - float(np.min(self.expected_variance)) / self.prior_variance if self.prior_variance > 0 else 0.0


def _systematic(weights, u, count):
    positions = (jnp.arange(count, dtype=weights.dtype) + u) / count
    return jnp.clip(jnp.searchsorted(jnp.cumsum(weights), positions), 0, weights.shape[0] - 1)


def expected_posterior_variance(error, predictions: Float[Array, "S N"], metric: Float[Array, " N"], weights: Float[Array, " N"],
                                key, n_truth: int = 64, n_noise: int = 4) -> Float[Array, " S"]:
    """E_y[Var(m | y_s)] for each candidate time s (see module docstring)."""
    pick, noise = jax.random.split(key)
    truth = _systematic(weights, jax.random.uniform(pick, (), weights.dtype), n_truth)  # (J,)
    eps = jax.random.normal(noise, (n_truth, n_noise), predictions.dtype)
    centred = metric - jnp.sum(weights * metric)
    log_w = jnp.log(jnp.maximum(weights, 1e-30))

    def at_time(f):  # f (N,)
        y = error.sample(eps, f[truth][:, None]).reshape(-1)  # (J·M,)
        log_post = log_w[None, :] + error.log_likelihood(y[:, None], f[None, :])  # (J·M, N)
        post = jax.nn.softmax(log_post, axis=-1)
        _, variance = weighted_mean_variance(centred[None, :], post)
        return jnp.mean(variance)

    return jax.lax.map(at_time, predictions)


@functools.lru_cache(maxsize=None)
def _expected_variance_jit(error, n_truth, n_noise):
    return jax.jit(functools.partial(expected_posterior_variance, error, n_truth=n_truth, n_noise=n_noise))


def suggest_sample_time(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, regimen: Regimen,
                        target: Target, window: tuple[float, float], metric_start: float = 0.0,
                        observed_analyte: int | str = 0, grid: Grid = Grid(), n_truth: int = 64, n_noise: int = 4,
                        key: int = 0) -> SampleSuggestion:
    """The time in ``window`` (h after ``sample.time``, on the grid) at which one reading of
    ``observed_analyte`` would most reduce the variance of ``target.metric`` over the window
    starting ``metric_start`` h after now, if ``regimen`` is given."""
    observed = model.analyte_index(observed_analyte)
    fc_observed = forecast(model, sample, history, [regimen], grid, observed)
    if model.analyte_index(target.analyte) == observed:
        fc_target = fc_observed
    else:
        fc_target = forecast(model, sample, history, [regimen], grid, target.analyte)
    metric = target.metric(fc_target.times, fc_target.values[0], sample.time + metric_start)  # (N,)
    offsets = np.arange(grid.points) * grid.step
    inside = np.flatnonzero((offsets >= window[0] - 1e-9) & (offsets <= window[1] + 1e-9))
    if inside.size == 0:
        raise ValueError(f"no grid time in the window {window} h")
    predictions = fc_observed.values[0][:, inside].T  # (S, N)
    expected = _expected_variance_jit(model.analytes[observed].error, n_truth, n_noise)(
        predictions, metric, fc_observed.weights, jax.random.PRNGKey(key))
    _, prior = weighted_mean_variance(metric, fc_observed.weights)
    expected = np.asarray(expected, np.float64)
    times = float(sample.time) + offsets[inside]
    return SampleSuggestion(float(times[int(np.argmin(expected))]), times, expected, float(prior), target.metric.name)
