"""Model averaging on a small nonlinear PK case against importance sampling.

Two one-compartment IV-bolus models of one drug (different populations: CL, V log-normal;
combined additive + proportional error, so the readings are nonlinear in log θ):
C(t) = D / V · exp(−CL / V · t). The reference evidences come from 400,000 prior draws per
model: log p(y_1:k | M) = log mean_i Π_{j≤k} p(y_j | θ_i) (the prior is the importance
density; measured ESS ≥ 17,000 of 400,000 after the last reading), and the posterior model
probabilities after each reading follow.
"""

import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from assimilation import Analyte, Combined, Dose, LinearCompartments, Model, Population, averaging
from assimilation.events import Reading

DOSE = 1000.0
TIMES = (1.0, 4.0, 8.0, 12.0)
ADD, PROP = 1.0, 0.10
POPULATIONS = {  # (typical CL L/h, V L), Ω diagonal (log scale)
    "fast_small": ((5.0, 40.0), (0.09, 0.04)),
    "slow_large": ((3.0, 70.0), (0.16, 0.06)),
}
PRIOR = np.array([0.5, 0.5])


def _model(name):
    typical, omega = POPULATIONS[name]
    return Model(
        name=name,
        population=Population(("CL", "V"), np.array(typical), np.diag(omega)),
        dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
        compartments=("central",),
        analytes=(Analyte("concentration", lambda p, x: x[0] / p["V"], Combined(ADD, PROP)),),
    )


MODELS = [_model(name) for name in POPULATIONS]


def _concentration(log_cl, log_v, t):
    return DOSE / np.exp(log_v) * np.exp(-np.exp(log_cl - log_v) * t)


def _readings():
    rng = np.random.default_rng(2)
    log_cl, log_v = np.log(4.0), np.log(52.0)  # between the two populations
    out = []
    for t in TIMES:
        f = _concentration(log_cl, log_v, t)
        out.append(Reading(t, float(f + np.hypot(ADD, PROP * f) * rng.normal())))
    return out


def _importance_weights(n=400_000):
    """(K, readings) posterior model probabilities from importance sampling, and the last ESS."""
    rng = np.random.default_rng(0)
    readings = _readings()
    log_evidence, ess = [], []
    for name in POPULATIONS:
        typical, omega = POPULATIONS[name]
        draws = np.log(typical) + rng.normal(size=(n, 2)) * np.sqrt(omega)
        total = np.zeros(n)
        row = []
        for r in readings:
            f = _concentration(draws[:, 0], draws[:, 1], r.time)
            total += norm.logpdf(r.value, f, np.hypot(ADD, PROP * f))
            row.append(logsumexp(total) - np.log(n))
        log_evidence.append(row)
        w = np.exp(total - total.max())
        ess.append(w.sum() ** 2 / (w**2).sum())
    log_evidence = np.array(log_evidence) + np.log(PRIOR)[:, None]
    return np.exp(log_evidence - logsumexp(log_evidence, axis=0)), min(ess)


def _bma_weights(method, n):
    averaged = averaging.init(MODELS, {}, 1, n, method, prior_weights=PRIOR, floor=0.0)
    averaged = averaging.update(averaged, [Dose(0.0, DOSE)])
    out = []
    for reading in _readings():
        averaged = averaging.update(averaged, [reading])
        out.append(averaged.weights()[0])
    return np.stack(out, axis=1)


def test_reference_is_informative_and_well_sampled():
    exact, ess = _importance_weights()
    assert ess > 5000
    assert exact[0].max() - exact[0].min() > 0.2 and 0.05 < exact[0].min() and exact[0].max() < 0.95


def test_particle_filter_weights_match_importance_sampling():
    exact, _ = _importance_weights()
    # PF Monte Carlo error with 4,000 particles (as in the linear-Gaussian test, SD ≲ 0.01);
    # (measured here: ≤ 0.006); the importance sampler's own error is smaller (ESS > 5,000)
    np.testing.assert_allclose(_bma_weights("pf", 4000), exact, atol=0.04)


def test_ensemble_kalman_weights_approximate_importance_sampling():
    """The EnKF's evidence is a Gaussian approximation of a skewed predictive: close, not exact
    (measured: 0.06-0.09 below the reference at every reading; 2,000 members)."""
    exact, _ = _importance_weights()
    np.testing.assert_allclose(_bma_weights("enkf", 2000), exact, atol=0.15)
