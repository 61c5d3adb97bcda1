"""Next-sample suggestion against a brute-force quadrature on a three-particle posterior.

Reference: for particles i with weights w_i, predicted concentrations f_i(s) at the sampling
time s and metric m_i (next-24 h AUC of a 1 h infusion, closed form by mass balance), with additive error σ,

    E_y[Var(m | y)] = ∫ Σ_j w_j N(y; f_j(s), σ²) · Var_{w(y)}(m) dy,   w_i(y) ∝ w_i N(y; f_i(s), σ²),

integrated on a fine grid of y.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from dosing_policy import VANCOMYCIN_AUC24, Grid, PosteriorSample, Regimen, suggest_sample_time

from .closed_form import infusion_concentration, one_compartment_iv

CL = np.array([2.5, 4.0, 6.5])
W = np.array([0.5, 0.3, 0.2])
V, A, SIGMA = 40.0, 1000.0, 1.5


def _auc24():
    """Mass balance: CL · AUC(0, 24) = A − V · C(24)."""
    return (A - V * np.array([infusion_concentration(24.0, A, 1.0, c, V) for c in CL])) / CL


def _brute_force(times):
    m = _auc24()
    out = []
    for s in times:
        f = np.array([infusion_concentration(s, A, 1.0, c, V) for c in CL])
        y = np.linspace(f.min() - 10 * SIGMA, f.max() + 10 * SIGMA, 20001)
        lik = norm.pdf(y[:, None], f[None, :], SIGMA) * W[None, :]
        evidence = lik.sum(1)
        post = lik / evidence[:, None]
        mean = post @ m
        var = post @ m**2 - mean**2
        out.append(np.trapezoid(evidence * var, y))
    return np.array(out)


def test_expected_variance_and_suggested_time_match_brute_force():
    model = one_compartment_iv(cl=4.0, v=V, sigma=SIGMA)
    n = len(CL)
    sample = PosteriorSample(jnp.asarray(np.stack([np.log(CL), np.full(n, np.log(V))], 1), jnp.float32),
                             jnp.zeros((n, 1), jnp.float32), jnp.asarray(np.log(W), jnp.float32), jnp.asarray(0.0, jnp.float32))
    suggestion = suggest_sample_time(model, sample, [], Regimen(A, 24.0, 1.0), VANCOMYCIN_AUC24, window=(1.0, 24.0),
                                     grid=Grid.covering(24.0, 0.5), n_truth=1000, n_noise=200, key=0)
    reference = _brute_force(suggestion.times)
    prior_variance = W @ _auc24() ** 2 - (W @ _auc24()) ** 2
    assert suggestion.prior_variance == pytest.approx(prior_variance, rel=0.01)
    np.testing.assert_allclose(suggestion.expected_variance, reference, rtol=0.05, atol=0.002 * prior_variance)
    # the suggested time is (within Monte Carlo error) the brute-force optimum
    chosen = reference[np.argmin(suggestion.expected_variance)]
    assert chosen <= reference.min() + 0.01 * prior_variance
    # and the time matters: the worst time is clearly worse than the best one
    assert reference.max() > reference.min() + 0.05 * prior_variance
    assert 0.0 < suggestion.reduction < 1.0
