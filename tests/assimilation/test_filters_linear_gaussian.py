"""PF and EnKF against the exact Kalman filter (filterpy) on a linear-Gaussian model.

With log-normal residual error and predictions that are products of parameters, the model is
linear-Gaussian in x = log θ:  x ~ N(μ, Ω) (static), log y_k = H_k x + ε_k, ε_k ~ N(0, σ²).
The exact posterior is the Kalman filter's (F = I, Q = 0), computed here by filterpy.
"""

import jax.numpy as jnp
import numpy as np
from filterpy.kalman import KalmanFilter

from assimilation import Analyte, LinearCompartments, LogNormal, Model, Population, online
from assimilation.events import Reading

MU = np.log(np.array([2.0, 5.0]))
OMEGA = np.array([[0.30, 0.12], [0.12, 0.20]])
SIGMA = 0.3

LINEAR = Model(
    name="linear_gaussian",
    population=Population(("a", "b"), np.exp(MU), OMEGA),
    dynamics=LinearCompartments(1, lambda p: jnp.array([[-1.0]])),  # amounts unused
    compartments=("unused",),
    analytes=(
        Analyte("a", lambda p, x: p["a"], LogNormal(SIGMA)),  # log y = x1 + ε
        Analyte("ab", lambda p, x: p["a"] * p["b"], LogNormal(SIGMA)),  # log y = x1 + x2 + ε
    ),
)
H = {"a": np.array([[1.0, 0.0]]), "ab": np.array([[1.0, 1.0]])}


def _readings():
    rng = np.random.default_rng(7)
    truth = MU + np.linalg.cholesky(OMEGA) @ rng.normal(size=2)
    out = []
    for k, analyte in enumerate(["a", "ab", "ab", "a", "ab"]):
        log_y = float((H[analyte] @ truth)[0]) + SIGMA * rng.normal()
        out.append(Reading(float(k + 1), float(np.exp(log_y)), analyte))
    return out


def _kalman(mean, cov, readings, persistence=None):
    """The exact posterior. ``persistence`` (analyte -> h): the tempered likelihood, under which
    a reading Δt after the previous one of its analyte has variance σ² / min(1, Δt / h)."""
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.x, kf.P, kf.F, kf.Q = mean.copy(), cov.copy(), np.eye(2), np.zeros((2, 2))
    previous = {}
    for r in readings:
        weight = 1.0
        if persistence and r.analyte in persistence:
            weight = min(1.0, (r.time - previous.get(r.analyte, -np.inf)) / persistence[r.analyte])
            previous[r.analyte] = r.time
        kf.predict()
        kf.update(np.log(r.value), R=SIGMA**2 / weight, H=H[r.analyte])
    return kf.x, kf.P


def _moments(posterior):
    p = online.particles(posterior, 0)
    w = np.exp(p.log_weights.astype(np.float64))
    mean = w @ p.log_params
    centred = p.log_params - mean
    return mean, (centred * w[:, None]).T @ centred, p


def _enkf_and_kalman_from_its_prior(model, readings, persistence=None):
    """(EnKF posterior mean, covariance) and the Kalman filter's from the ensemble's own prior
    moments, from which the EAKF is the Kalman filter exactly (up to float32)."""
    prior = online.particles(online.init(model, {}, 2, 2000, "enkf"), 0)
    mean, cov, _ = _moments(online.update(online.init(model, {}, 2, 2000, "enkf"), readings))
    sample = prior.log_params.astype(np.float64)
    return (mean, cov), _kalman(sample.mean(0), np.cov(sample.T, bias=True), readings, persistence)


def test_particle_filter_matches_kalman():
    readings = _readings()
    posterior = online.update(online.init(LINEAR, {}, 1, 4000, "pf"), readings)
    mean, cov, _ = _moments(posterior)
    exact_mean, exact_cov = _kalman(MU, OMEGA, readings)
    sd = np.sqrt(np.diag(exact_cov))
    # Tolerance: Monte-Carlo error of 4,000 particles after resampling + Liu–West moves
    # (ESS ≳ 1,000 -> SE of a mean ≈ 0.03 sd, of a variance ≈ 5 %); stated as 0.15 sd and 20 %.
    np.testing.assert_array_less(np.abs(mean - exact_mean), 0.15 * sd)
    np.testing.assert_allclose(np.diag(cov), np.diag(exact_cov), rtol=0.20)
    assert abs(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]) - exact_cov[0, 1] / (sd[0] * sd[1])) < 0.1


def test_ensemble_kalman_matches_kalman():
    readings = _readings()
    (mean, cov), (from_sample_mean, from_sample_cov) = _enkf_and_kalman_from_its_prior(LINEAR, readings)
    np.testing.assert_allclose(mean, from_sample_mean, atol=1e-4)
    np.testing.assert_allclose(cov, from_sample_cov, rtol=1e-3, atol=1e-6)
    # From the true prior: sampling error of 2,000 members (SE ≈ 0.02 sd, 3 % variance).
    exact_mean, exact_cov = _kalman(MU, OMEGA, readings)
    sd = np.sqrt(np.diag(exact_cov))
    np.testing.assert_array_less(np.abs(mean - exact_mean), 0.1 * sd)
    np.testing.assert_allclose(np.diag(cov), np.diag(exact_cov), rtol=0.12)


def test_filterpy_ensemble_kalman_agrees_with_kalman():
    """The baseline of the benchmark is itself right on this model (loose: 200 perturbed members)."""
    from filterpy.kalman import EnsembleKalmanFilter

    readings = _readings()
    np.random.seed(0)
    means = []
    for analyte_order in [readings]:
        enkf = EnsembleKalmanFilter(x=MU.copy(), P=OMEGA.copy(), dim_z=1, dt=1.0, N=2000,
                                    hx=lambda x: x[:1], fx=lambda x, dt: x)
        enkf.Q = np.zeros((2, 2))
        enkf.R = np.array([[SIGMA**2]])
        for r in analyte_order:
            enkf.hx = (lambda x: x[:1]) if r.analyte == "a" else (lambda x: x[:1] + x[1:])
            enkf.predict()
            enkf.update(np.array([np.log(r.value)]))
        means.append(enkf.x.copy())
    exact_mean, exact_cov = _kalman(MU, OMEGA, readings)
    np.testing.assert_array_less(np.abs(means[0] - exact_mean), 0.15 * np.sqrt(np.diag(exact_cov)))


# ----------------------------------------------------------------------------- persistent errors

PERSISTENCE_H = 4.0
PERSISTENT = Model(
    name="linear_gaussian_persistent",
    population=LINEAR.population,
    dynamics=LINEAR.dynamics,
    compartments=LINEAR.compartments,
    analytes=(
        Analyte("a", lambda p, x: p["a"], LogNormal(SIGMA), persistence_h=PERSISTENCE_H),  # a dense sensor
        Analyte("ab", lambda p, x: p["a"] * p["b"], LogNormal(SIGMA)),  # independent readings
    ),
)


def _dense_readings():
    """A burst of 'a' readings (gaps 0.5-2 h, shorter than the persistence) among 'ab' readings."""
    rng = np.random.default_rng(11)
    truth = MU + np.linalg.cholesky(OMEGA) @ rng.normal(size=2)
    schedule = [(1.0, "a"), (1.5, "ab"), (2.0, "a"), (2.5, "a"), (3.0, "ab"), (4.5, "a"), (5.0, "a"), (11.0, "a"), (12.0, "ab")]
    out = []
    for t, analyte in schedule:
        log_y = float((H[analyte] @ truth)[0]) + SIGMA * rng.normal()
        out.append(Reading(t, float(np.exp(log_y)), analyte))
    return out


def test_persistent_errors_temper_the_likelihood_as_the_exact_filter_with_inflated_variance():
    readings = _dense_readings()
    exact_mean, exact_cov = _kalman(MU, OMEGA, readings, {"a": PERSISTENCE_H})
    naive_mean, naive_cov = _kalman(MU, OMEGA, readings)
    sd = np.sqrt(np.diag(exact_cov))
    # the weights matter on this data (so the checks below can fail): untempered, the posterior
    # of log a is narrower by more than the tolerances
    assert naive_cov[0, 0] < 0.75 * exact_cov[0, 0]

    pf = online.update(online.init(PERSISTENT, {}, 1, 4000, "pf"), readings)
    mean, cov, _ = _moments(pf)
    np.testing.assert_array_less(np.abs(mean - exact_mean), 0.15 * sd)  # tolerances as in the PF test above
    np.testing.assert_allclose(np.diag(cov), np.diag(exact_cov), rtol=0.20)

    (mean, cov), (from_sample_mean, from_sample_cov) = _enkf_and_kalman_from_its_prior(PERSISTENT, readings, {"a": PERSISTENCE_H})
    np.testing.assert_allclose(mean, from_sample_mean, atol=1e-4)  # the EAKF is exact from its own prior
    np.testing.assert_allclose(cov, from_sample_cov, rtol=1e-3, atol=1e-6)

    # MAP: in a linear-Gaussian model the mode is the posterior mean, the Laplace covariance exact
    map_posterior = online.update(online.init(PERSISTENT, {}, 1, 1, "map"), readings)
    np.testing.assert_allclose(np.asarray(map_posterior.state.mode)[0], exact_mean, atol=1e-4)


def test_the_weights_carry_across_updates_and_snapshots():
    """Splitting the readings between updates, through a snapshot, changes nothing."""
    readings = _dense_readings()
    whole = online.update(online.init(PERSISTENT, {}, 3, 256, "enkf"), readings)
    first = online.update(online.init(PERSISTENT, {}, 3, 256, "enkf"), readings[:4])
    split = online.update(online.from_bytes(online.to_bytes(first), PERSISTENT), readings[4:])
    np.testing.assert_allclose(np.asarray(split.state.log_params), np.asarray(whole.state.log_params), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(split.state.last_reading)[0], [11.0, 12.0])
