"""Posterior predictive checks: calibrated readings give uniform PITs; an outlier is flagged."""

import jax.numpy as jnp
import numpy as np
from scipy.stats import kstest

from assimilation import Dose
from dosing_policy import PosteriorSample, advance, check_reading
from dosing_policy.plausibility import predictive_cdf

from .closed_form import infusion_concentration, one_compartment_iv


def _sample(n=300, seed=0):
    model = one_compartment_iv(cl=4.0, v=50.0, omega_cl=0.09, sigma=1.0)
    log_cl = np.log(4.0) + 0.3 * np.random.default_rng(seed).standard_normal(n)
    sample = PosteriorSample(jnp.asarray(np.stack([log_cl, np.full(n, np.log(50.0))], 1), jnp.float32),
                             jnp.zeros((n, 1), jnp.float32), jnp.zeros(n, jnp.float32), jnp.asarray(0.0, jnp.float32))
    return model, sample


def test_advance_matches_the_closed_form():
    model, sample = _sample(8)
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    at = advance(model, sample, history, 5.0)
    cl = np.exp(np.asarray(sample.log_params[:, 0], np.float64))
    expected = 50.0 * np.array([infusion_concentration(5.0, 1000.0, 1.0, c, 50.0) for c in cl])
    np.testing.assert_allclose(np.asarray(at.amounts[:, 0]), expected, rtol=1e-4)
    assert float(at.time) == 5.0


def test_readings_drawn_from_the_predictive_have_uniform_pits():
    """If y ~ p(y) (particle ~ w, then residual error), F(y) ~ U(0, 1): a KS test at 1 % and
    the flag rate at α = 0.1 within binomial bounds are the independent reference."""
    model, sample = _sample()
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    at = advance(model, sample, history, 6.0)
    f = np.asarray(at.amounts[:, 0]) / 50.0
    rng = np.random.default_rng(5)
    n = 400
    readings = f[rng.integers(0, len(f), n)] + 1.0 * rng.standard_normal(n)
    pits = np.array([predictive_cdf(model, at, 0, y) for y in readings])
    assert kstest(pits, "uniform").pvalue > 0.01
    flagged = np.sum(2 * np.minimum(pits, 1 - pits) < 0.1)
    assert 40 - 4 * np.sqrt(n * 0.1 * 0.9) < flagged < 40 + 4 * np.sqrt(n * 0.1 * 0.9)


def test_an_outlier_is_flagged_and_a_typical_reading_is_not():
    model, sample = _sample()
    history = [Dose(0.0, 1000.0, 0, 1.0)]
    typical = check_reading(model, sample, history, 6.0, "concentration", 11.0)  # ~ 1000/50·e^{-0.08·5}·… ≈ 11 mg/L
    outlier = check_reading(model, sample, history, 6.0, "concentration", 60.0)
    assert typical.tail_probability > 0.1
    assert outlier.tail_probability < 1e-6 and outlier.sign == 1
    assert check_reading(model, sample, history, 6.0, 0, 0.5).sign == -1
