"""PTA and toxicity risk against the log-normal closed form.

One-compartment IV vancomycin-like patient at steady state of A mg q12h (1 h infusions),
log CL ~ N(mu, s²), V known. Continuing the regimen, the AUC over the next 24 h is exactly
2A/CL, so PTA = Φ((log(2A/400) − mu)/s) − Φ((log(2A/600) − mu)/s) and
risk = P(AUC > 600) = Φ((log(2A/600) − mu)/s) (Rybak et al. 2020 target 400-600 mg·h/L).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from dosing_policy import VANCOMYCIN_AUC24, Grid, PosteriorSample, Regimen, Utility, attainment, evaluate
from dosing_policy.attainment import weighted_quantiles

from .closed_form import lognormal_pta, one_compartment_iv, steady_state_trough_amount

MU, S, V, A = np.log(4.0), 0.35, 50.0, 1000.0


def _steady_state_sample(log_cl, log_weights):
    cl = np.exp(log_cl)
    x = steady_state_trough_amount(A, 12.0, 1.0, cl, V)
    return PosteriorSample(
        jnp.asarray(np.stack([log_cl, np.full_like(log_cl, np.log(V))], 1), jnp.float32),
        jnp.asarray(x[:, None], jnp.float32), jnp.asarray(log_weights, jnp.float32), jnp.asarray(100.0, jnp.float32),
    )


def _pta(sample):
    model = one_compartment_iv(cl=4.0, v=V)
    ev = evaluate(model, sample, [], [Regimen(A, 12.0, 1.0)], VANCOMYCIN_AUC24, Utility((0.0,), (1.0,)), Grid.covering(24.0, 0.25))
    return float(ev.attainment.pta[0, 0]), float(ev.attainment.risk[0, 0])


def test_monte_carlo_pta_matches_the_lognormal_closed_form():
    n = 4000
    log_cl = MU + S * np.random.default_rng(1).standard_normal(n)
    pta, risk = _pta(_steady_state_sample(log_cl, np.zeros(n)))
    exact_pta, exact_risk = lognormal_pta(2 * A, 400.0, 600.0, MU, S)
    # binomial standard error at n = 4000 is ≤ 0.008; allow 4 standard errors
    assert pta == pytest.approx(exact_pta, abs=0.032)
    assert risk == pytest.approx(exact_risk, abs=0.032)


def test_importance_weights_are_used():
    """Particles from a wider proposal N(mu + 0.2, (1.6 s)²) weighted by target/proposal density."""
    n = 4000
    mean, sd = MU + 0.2, 1.6 * S
    log_cl = mean + sd * np.random.default_rng(2).standard_normal(n)
    log_w = -0.5 * ((log_cl - MU) / S) ** 2 + 0.5 * ((log_cl - mean) / sd) ** 2
    pta, risk = _pta(_steady_state_sample(log_cl, log_w))
    exact_pta, exact_risk = lognormal_pta(2 * A, 400.0, 600.0, MU, S)
    assert pta == pytest.approx(exact_pta, abs=0.04)
    assert risk == pytest.approx(exact_risk, abs=0.04)


def test_attainment_and_quantiles_against_numpy():
    rng = np.random.default_rng(0)
    values = rng.lognormal(6.0, 0.4, 1001)
    weights = np.full(1001, 1 / 1001)
    result = attainment(jnp.asarray(values), jnp.asarray(weights), VANCOMYCIN_AUC24)
    assert float(result.pta) == pytest.approx(np.mean((values >= 400) & (values <= 600)), abs=1e-6)
    assert float(result.risk) == pytest.approx(np.mean(values > 600), abs=1e-6)
    assert float(result.quantiles[1]) == pytest.approx(np.median(values), rel=1e-6)
    # all mass on two values: 25 % on the smaller, 75 % on the larger
    w = np.zeros(1001)
    small, large = sorted([3, 7], key=lambda i: values[i])
    w[small], w[large] = 0.25, 0.75
    q = weighted_quantiles(jnp.asarray(values), jnp.asarray(w), (0.2, 0.5, 0.9))
    np.testing.assert_allclose(np.asarray(q), [values[small], values[large], values[large]], rtol=1e-6)
