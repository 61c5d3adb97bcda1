"""Model API against independent references: scipy.linalg.expm, solve_ivp, scipy.stats."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from scipy.integrate import solve_ivp

from assimilation import (
    Additive, Analyte, CategoricalEffect, Combined, Dose, ExponentialEffect, LinearCompartments, LogNormal, Model,
    OdeCompartments, Population, PowerEffect, Proportional, load_model,
)
from assimilation.parameters import covariate_shift, prior_mean
from assimilation.particle_filter import reading_log_likelihood
from assimilation.simulate import amounts_at, dose_table_of, predict_readings

# ----------------------------------------------------------------------------- structure


def _three_compartment_rates(p):
    """Depot -> central <-> peripheral, elimination from central (1/h)."""
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    return jnp.array([[-p["ka"], 0.0, 0.0], [p["ka"], -(k10 + k12), k21], [0.0, k12, -k21]])


THREE = Model(
    name="three",
    population=Population(("ka", "CL", "V1", "Q", "V2"), np.array([0.9, 4.0, 20.0, 7.0, 50.0]), np.diag([0.1] * 5)),
    dynamics=LinearCompartments(3, _three_compartment_rates),
    compartments=("depot", "central", "peripheral"),
    analytes=(Analyte("c", lambda p, x: x[1] / p["V1"], Additive(0.1)),),
)


def test_three_compartment_boluses_at_arbitrary_times_match_expm():
    """x(t) = Σ_doses expm(K (t − t_d)) e_c · amt for boluses (superposition; scipy expm)."""
    rng = np.random.default_rng(3)
    dose_times = np.sort(rng.uniform(0, 30, 5))
    doses = [Dose(float(t), float(a), int(c)) for t, a, c in zip(dose_times, rng.uniform(50, 500, 5), rng.integers(0, 3, 5))]
    times = np.sort(rng.uniform(0.1, 48, 9))
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(THREE.population.typical, jnp.float64)) + jnp.asarray(rng.normal(0, 0.3, 5))
        ours = np.asarray(amounts_at(THREE, log_params, dose_table_of(THREE, doses, dtype=jnp.float64), jnp.asarray(times)))
        K = np.asarray(_three_compartment_rates(THREE.parameters(log_params)))
    reference = np.zeros((len(times), 3))
    for i, t in enumerate(times):
        for d in doses:
            if d.time < t:
                reference[i] += scipy.linalg.expm(K * (t - d.time))[:, d.compartment] * d.amount
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-8)


def test_initial_amounts_start_every_course_and_every_filter():
    """A model whose state at time zero is not empty (here 100 mg in the depot): the exact
    solution adds expm(K t) x0 to the doses' responses, and each filter starts from x0."""
    from dataclasses import replace

    from assimilation.online import init, particles

    start = (100.0, 0.0, 0.0)
    model = replace(THREE, name="three_loaded", initial_amounts=start)
    doses = [Dose(0.0, 200.0, 1), Dose(6.0, 300.0, 0)]
    times = np.array([0.5, 3.0, 7.5, 24.0])
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        ours = np.asarray(amounts_at(model, log_params, dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))
        K = np.asarray(_three_compartment_rates(model.parameters(log_params)))
    reference = np.stack([
        scipy.linalg.expm(K * t) @ np.array(start) + sum(scipy.linalg.expm(K * (t - d.time))[:, d.compartment] * d.amount for d in doses if d.time < t)
        for t in times
    ])
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-8)
    for method in ("pf", "enkf", "map"):
        np.testing.assert_array_equal(particles(init(model, {}, n_particles=8, method=method)).amounts, np.broadcast_to(start, (8, 3)))
    with pytest.raises(ValueError, match="initial_amounts has 2 values for 3 compartments"):
        replace(THREE, initial_amounts=(1.0, 0.0))


def test_float32_exact_solution_is_close_to_float64():
    model = load_model("two_compartment_infusion")
    doses = [Dose(0.0, 1000.0, 0, 1.0), Dose(12.0, 1000.0, 0, 1.0), Dose(24.0, 1500.0, 0, 2.0)]
    times = np.array([1.0, 11.9, 13.0, 30.0, 48.0])
    log_params = np.log(model.population.typical)
    single = np.asarray(amounts_at(model, jnp.asarray(log_params, jnp.float32), dose_table_of(model, doses), jnp.asarray(times, jnp.float32)))
    with jax.enable_x64(True):
        double = np.asarray(amounts_at(model, jnp.asarray(log_params), dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))
    np.testing.assert_allclose(single, double, rtol=1e-4, atol=1e-3)


def _michaelis_menten(t, x, p):
    """Depot (first order) -> central with saturable elimination Vmax·C/(Km + C) (mg/h)."""
    c = x[1] / p["V"]
    return jnp.stack([-p["ka"] * x[0], p["ka"] * x[0] - p["Vmax"] * c / (p["Km"] + c)])


def test_nonlinear_ode_path_matches_solve_ivp():
    model = Model(
        name="mm",
        population=Population(("ka", "V", "Vmax", "Km"), np.array([1.1, 40.0, 30.0, 4.0]), np.diag([0.1] * 4)),
        dynamics=OdeCompartments(2, _michaelis_menten, rtol=1e-8, atol=1e-8),
        compartments=("depot", "central"),
        analytes=(Analyte("c", lambda p, x: x[1] / p["V"], Additive(0.1)),),
    )
    doses = [Dose(0.0, 500.0), Dose(5.3, 300.0, "central", 1.7), Dose(9.1, 400.0)]
    times = [0.7, 3.0, 5.3, 6.0, 7.5, 9.1, 15.0, 30.0]
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        ours = np.asarray(amounts_at(model, log_params, dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))
    p = dict(zip(model.population.names, model.population.typical))

    def rhs(t, x):
        infusion = np.array([0.0, 300.0 / 1.7 if 5.3 <= t < 7.0 else 0.0])
        c = x[1] / p["V"]
        return np.array([-p["ka"] * x[0], p["ka"] * x[0] - p["Vmax"] * c / (p["Km"] + c)]) + infusion

    # piecewise solve_ivp between breakpoints; boluses at 0 and 9.1 h into the depot
    breaks = sorted({0.0, 5.3, 7.0, 9.1, *times})
    x, reference = np.zeros(2), {}
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        reference[lo] = x.copy()  # left limit
        x = x + np.array([{0.0: 500.0, 9.1: 400.0}.get(lo, 0.0), 0.0])
        x = solve_ivp(rhs, (lo, hi), x, rtol=1e-10, atol=1e-10, method="LSODA").y[:, -1]
    reference[breaks[-1]] = x
    reference = [reference[t] for t in times]
    np.testing.assert_allclose(ours, np.array(reference), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- residual error


@pytest.mark.parametrize(
    "error, reference",
    [
        (Additive(0.7), lambda y, f: scipy.stats.norm(f, 0.7)),
        (Proportional(0.2), lambda y, f: scipy.stats.norm(f, 0.2 * f)),
        (Combined(0.5, 0.15), lambda y, f: scipy.stats.norm(f, np.sqrt(0.5**2 + (0.15 * f) ** 2))),
    ],
)
def test_gaussian_errors_match_scipy_stats(error, reference):
    y = np.array([0.3, 2.0, 5.5, 12.0])
    f = np.array([0.5, 2.5, 4.0, 15.0])
    with jax.enable_x64(True):
        np.testing.assert_allclose(error.log_likelihood(jnp.asarray(y), jnp.asarray(f)), reference(y, f).logpdf(y), rtol=1e-10)
        np.testing.assert_allclose(error.log_cdf(jnp.asarray(y), jnp.asarray(f)), reference(y, f).logcdf(y), rtol=1e-10)


def test_lognormal_error_matches_scipy_lognorm():
    """Ours is the density of log y (Jacobian 1/y dropped): lognorm.logpdf(y) = ours − log y."""
    y = np.array([0.3, 2.0, 5.5, 12.0])
    f = np.array([0.5, 2.5, 4.0, 15.0])
    error = LogNormal(0.25)
    with jax.enable_x64(True):
        ours = np.asarray(error.log_likelihood(jnp.asarray(y), jnp.asarray(f)))
        cdf = np.asarray(error.log_cdf(jnp.asarray(y), jnp.asarray(f)))
    np.testing.assert_allclose(ours - np.log(y), scipy.stats.lognorm(s=0.25, scale=f).logpdf(y), rtol=1e-10)
    np.testing.assert_allclose(cdf, scipy.stats.lognorm(s=0.25, scale=f).logcdf(y), rtol=1e-10)


def test_censored_reading_uses_probability_below_lloq():
    """Beal's M3: a BLQ reading contributes log Φ((LLOQ − f)/sd(f)), here for the built-in model."""
    model = load_model("two_compartment_infusion")
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        params = model.parameters(log_params)
        amounts = jnp.asarray([60.0, 10.0])  # central 60 mg -> f = 60/58.4 mg/L
        f = 60.0 / 58.4
        sd = np.sqrt(3.4**2 + (0.227 * f) ** 2)
        censored = reading_log_likelihood(model, params, amounts, 0, 1.0, True)
        observed = reading_log_likelihood(model, params, amounts, 0, 1.0, False)
    assert float(censored) == pytest.approx(scipy.stats.norm.logcdf((1.0 - f) / sd), rel=1e-10)
    assert float(observed) == pytest.approx(scipy.stats.norm.logpdf(1.0, f, sd), rel=1e-10)


# ----------------------------------------------------------------------------- covariates


def test_covariate_effects_shift_the_log_prior_mean():
    population = Population(
        names=("CL", "V"),
        typical=np.array([4.0, 50.0]),
        omega=np.diag([0.1, 0.1]),
        effects=(
            PowerEffect("CL", "WT", 70.0, 0.75),
            ExponentialEffect("CL", "AGE", 40.0, -0.01),
            CategoricalEffect("V", "SEX", (("F", 0.8),)),
        ),
    )
    patient = {"WT": 35.0, "AGE": 80.0, "SEX": "F"}
    expected_cl = 4.0 * (35.0 / 70.0) ** 0.75 * np.exp(-0.01 * 40.0)
    np.testing.assert_allclose(np.exp(prior_mean(population, patient)), [expected_cl, 50.0 * 0.8], rtol=1e-12)
    np.testing.assert_allclose(covariate_shift(population, {"WT": 70.0, "AGE": 40.0, "SEX": "M"}), [0.0, 0.0])
    with pytest.raises(KeyError, match="AGE"):
        prior_mean(population, {"WT": 70.0, "SEX": "M"})


def test_builtin_model_prediction_follows_weight():
    """Theophylline-like model: CL and V ∝ WT, so C(t) after a per-kg dose is weight-free."""
    model = load_model("one_compartment_oral")
    doses = [Dose(0.0, 4.0 * 50.0)]
    light = jnp.asarray(prior_mean(model.population, {"WT": 50.0}), jnp.float32)
    heavy = jnp.asarray(prior_mean(model.population, {"WT": 100.0}), jnp.float32)
    times = jnp.asarray([1.0, 5.0, 12.0])
    c_light = amounts_at(model, light, dose_table_of(model, doses), times)[:, 1] / jnp.exp(light[2])
    c_heavy = amounts_at(model, heavy, dose_table_of(model, [Dose(0.0, 4.0 * 100.0)]), times)[:, 1] / jnp.exp(heavy[2])
    np.testing.assert_allclose(c_light, c_heavy, rtol=1e-5)


# ----------------------------------------------------------------------------- loading


def test_model_loads_from_a_file_path(tmp_path):
    source = textwrap.dedent(
        '''
        import jax.numpy as jnp
        import numpy as np
        from assimilation import Analyte, LinearCompartments, Model, Population, Proportional

        model = Model(
            name="iv_bolus",
            population=Population(("CL", "V"), np.array([2.0, 10.0]), np.diag([0.1, 0.1])),
            dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
            compartments=("central",),
            analytes=(Analyte("c", lambda p, x: x[0] / p["V"], Proportional(0.1)),),
        )
        '''
    )
    path = tmp_path / "iv_bolus.py"
    path.write_text(source)
    model = load_model(path)
    assert model.name == "iv_bolus" and load_model(str(path)) is model
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray([2.0, 10.0], jnp.float64))
        x = amounts_at(model, log_params, dose_table_of(model, [Dose(0.0, 100.0)], dtype=jnp.float64), jnp.asarray([3.0]))
        c = predict_readings(model, model.parameters(log_params), x[0])
    assert float(c[0]) == pytest.approx(10.0 * np.exp(-0.2 * 3.0), rel=1e-12)  # C0 e^{-k t}
    (tmp_path / "broken.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="does not define"):
        load_model(tmp_path / "broken.py")
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no_such_model")
