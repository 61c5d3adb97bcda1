"""Docetaxel PK + Friberg myelosuppression with Kloft 2006's docetaxel parameters."""

import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from assimilation import Dose
from assimilation.events import Reading
from assimilation.models import docetaxel_friberg
from assimilation.online import init, predict, update

from .helpers import library_model, readings, typical_log_params

DOSE_75_MG_M2 = [Dose(0.0, 75.0 * 1.8, "central", 1.0)]  # 75 mg/m² over 1 h, BSA 1.8 m²
CYCLE = np.arange(0.0, 21 * 24 + 1e-6, 2.0)


def _friberg_reference(p, dose, duration, times):
    """Friberg et al. 2002 equations in their original (absolute) form, with Kloft 2006's
    linear drug effect, solved by scipy."""
    ktr = 4.0 / p["MTT"]
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]

    def rhs(t, y):
        a1, a2, prol, t1, t2, t3, circ = y
        rate = dose / duration if t < duration else 0.0
        c_um = a1 / p["V1"] / 807.88 * 1000.0
        e = p["SL"] * c_um
        return [
            rate - (k10 + k12) * a1 + k21 * a2, k12 * a1 - k21 * a2,
            ktr * prol * (1 - e) * (p["Circ0"] / circ) ** p["gamma"] - ktr * prol,
            ktr * (prol - t1), ktr * (t1 - t2), ktr * (t2 - t3), ktr * (t3 - circ),
        ]

    y0 = [0.0, 0.0] + [p["Circ0"]] * 5
    first = solve_ivp(rhs, (0.0, duration), y0, rtol=1e-9, atol=1e-10, method="LSODA", dense_output=True)
    rest = solve_ivp(rhs, (duration, times[-1]), first.y[:, -1], rtol=1e-9, atol=1e-10, method="LSODA", dense_output=True)
    return np.array([first.sol(t)[6] if t <= duration else rest.sol(t)[6] for t in times])


def test_anc_matches_scipy_solution_of_the_published_equations():
    model = library_model("docetaxel_friberg")
    log_params = typical_log_params(model, {}) + jnp.asarray(np.linspace(-0.1, 0.1, model.n_parameters), jnp.float32)
    p = {k: float(v) for k, v in model.parameters(log_params).items()}
    times = [0.5, 1.0, 6.0, 48.0, 120.0, 170.0, 200.0, 300.0, 500.0]
    values, _ = readings(model, log_params, DOSE_75_MG_M2, times)
    np.testing.assert_allclose(values[:, 0], _friberg_reference(p, 135.0, 1.0, times), rtol=2e-3)


def test_baseline_anc_is_circ0_and_stays_there_without_drug():
    model = library_model("docetaxel_friberg")
    values, _ = readings(model, typical_log_params(model, {}), [Dose(0.0, 0.0, "central", 1.0)], [0.0, 100.0, 500.0])
    np.testing.assert_allclose(values[:, 0], 5.21965, rtol=1e-5)  # Kloft 2006 (DDMODEL00000224): Circ0 5.22 × 10^9/L


def test_nadir_on_day_7_to_9_and_recovery_by_the_next_cycle():
    """Taxotere label: median time to neutrophil nadir ~7 days; 3-weekly cycles assume
    recovery by day 21."""
    model = library_model("docetaxel_friberg")
    values, _ = readings(model, typical_log_params(model, {}), DOSE_75_MG_M2, CYCLE)
    grid, anc = jnp.asarray(CYCLE, jnp.float32), jnp.asarray(values[:, 0])
    days = float(docetaxel_friberg.time_to_nadir(grid, anc, 0.0, 21 * 24.0)) / 24.0
    assert 7.0 <= days <= 9.0
    circ0 = docetaxel_friberg.population.typical[docetaxel_friberg.population.names.index("Circ0")]
    assert float(docetaxel_friberg.nadir(grid, anc, 0.0, 504.0)) < 0.5 * circ0
    assert values[-1, 0] > 0.8 * circ0


def test_higher_dose_gives_lower_nadir():
    model = library_model("docetaxel_friberg")
    log_params = typical_log_params(model, {})
    nadirs = [readings(model, log_params, [Dose(0.0, dose, "central", 1.0)], CYCLE)[0][:, 0].min() for dose in (60.0, 135.0, 180.0)]
    assert nadirs[0] > nadirs[1] > nadirs[2]


def test_grade4_probability_over_particles():
    anc = jnp.array([[3.0, 0.4, 2.0], [3.0, 1.0, 2.0]])  # two particles, three times
    grid = jnp.array([0.0, 170.0, 300.0])
    assert float(docetaxel_friberg.probability_grade4(grid, anc, 0.0, 504.0)) == 0.5


def test_particle_filter_learns_a_sensitive_patient_from_anc_readings():
    """Truth: lower baseline and twice the drug-effect slope. A baseline and two early counts pull the
    forecast of the day-8 ANC towards the truth."""
    model = library_model("docetaxel_friberg")
    names = model.population.names
    truth = typical_log_params(model, {})
    truth = truth.at[names.index("Circ0")].add(np.log(0.7)).at[names.index("SL")].add(np.log(2.0))
    reading_times = [0.0, 96.0, 144.0]
    simulated, _ = readings(model, truth, DOSE_75_MG_M2, reading_times + [192.0])
    observed, true_day8 = simulated[:3, 0], float(simulated[3, 0])
    prior_posterior = init(model, {}, key=3, n_particles=64)
    prior = float(predict(prior_posterior, [192.0], DOSE_75_MG_M2, "anc").mean[0, 0])
    posterior = update(prior_posterior, DOSE_75_MG_M2 + [Reading(t, float(v), "anc") for t, v in zip(reading_times, observed)])
    # an empty dose: the same regimen shape as above, so the compiled forecast is reused
    forecast = float(predict(posterior, [192.0], [Dose(192.0, 0.0, "central", 1.0)], "anc").mean[0, 0])
    assert np.isfinite(forecast)
    assert abs(forecast - true_day8) < 0.5 * abs(prior - true_day8)
