"""Exact linear solution (modal superposition) against scipy's solve_ivp on the same ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from assimilation import Dose, LinearCompartments, Model, OdeCompartments, Population, Additive, Analyte, load_model
from assimilation.simulate import amounts_at, dose_table_of
from assimilation.structure import modes


def reference_amounts(K, doses, F, lag, times, n):
    """solve_ivp of dx/dt = K x + u(t), integrated piecewise between input breakpoints."""
    arrivals = [(d.time + lag[d.compartment], d) for d in doses]
    breaks = sorted({0.0, *[a for a, _ in arrivals], *[a + d.duration for a, d in arrivals], *times})
    x = np.zeros(n)
    out = {}
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        if lo in times:  # left limit: a bolus arriving now is not yet in the state
            out[lo] = x.copy()
        for a, d in arrivals:
            if d.duration == 0 and a == lo:
                x[d.compartment] += F[d.compartment] * d.amount
        rate = np.zeros(n)
        for a, d in arrivals:
            if d.duration > 0 and a <= lo and a + d.duration >= hi:
                rate[d.compartment] += F[d.compartment] * d.amount / d.duration
        sol = solve_ivp(lambda t, y: K @ y + rate, (lo, hi), x, rtol=1e-10, atol=1e-12, method="LSODA")
        x = sol.y[:, -1]
    out[breaks[-1]] = x.copy()
    return np.array([out[t] for t in times])


CASES = {
    "1cmt bolus": ("one_compartment_oral", [Dose(0.0, 320.0, "central"), Dose(12.0, 320.0, "central")]),
    "1cmt oral": ("one_compartment_oral", [Dose(0.0, 320.0), Dose(8.0, 320.0), Dose(16.0, 160.0)]),
    "1cmt infusion": ("one_compartment_oral", [Dose(1.0, 500.0, "central", 2.0), Dose(13.0, 500.0, "central", 0.5)]),
    "2cmt infusion": ("two_compartment_infusion", [Dose(0.0, 1000.0, 0, 1.0), Dose(12.0, 1000.0, 0, 2.0)]),
    "2cmt bolus": ("two_compartment_infusion", [Dose(0.0, 1000.0), Dose(6.0, 500.0, "peripheral")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exact_linear_solution_matches_solve_ivp(case):
    name, doses = CASES[case]
    model = load_model(name)
    times = [0.5, 1.0, 2.5, 3.0, 7.9, 12.0, 12.25, 14.0, 20.0, 30.0]
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64)) + 0.1
        params = model.parameters(log_params)
        K = np.asarray(model.dynamics.rate_matrix(params))
        table = dose_table_of(model, doses, dtype=jnp.float64)
        ours = np.asarray(amounts_at(model, log_params, table, jnp.asarray(times)))
    indexed = [d._replace(compartment=model.compartment_index(d.compartment)) for d in doses]
    reference = reference_amounts(K, indexed, np.ones(2), np.zeros(2), times, 2)
    np.testing.assert_allclose(ours, reference, rtol=1e-7, atol=1e-7)


def _lagged_oral_model(dynamics, tlag_variance: float = 0.0):
    """Oral 1-compartment model with bioavailability and a depot lag time; ``tlag_variance`` > 0
    gives each particle its own lag."""
    return Model(
        name="lagged" if tlag_variance == 0 else "lagged-uncertain",
        population=Population(("ka", "CL", "V", "F", "tlag"), np.array([1.2, 3.0, 30.0, 0.7, 0.75]),
                              np.diag([0.1, 0.1, 0.1, 0.0, tlag_variance])),
        dynamics=dynamics,
        compartments=("depot", "central"),
        analytes=(Analyte("c", lambda p, x: x[1] / p["V"], Additive(0.5)),),
        bioavailability=lambda p: jnp.stack([p["F"], 1.0]),
        lag_time=lambda p: jnp.stack([p["tlag"], 0.0]),
    )


def _rates(p):
    return jnp.array([[-p["ka"], 0.0], [p["ka"], -p["CL"] / p["V"]]])


def test_lag_time_and_bioavailability_match_solve_ivp():
    model = _lagged_oral_model(LinearCompartments(2, _rates))
    doses = [Dose(0.0, 400.0), Dose(6.0, 400.0), Dose(7.0, 200.0, "central", 1.5)]
    times = [0.5, 0.75, 1.0, 6.5, 7.0, 8.0, 12.0]
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        ours = np.asarray(amounts_at(model, log_params, dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))
        K = np.asarray(_rates(model.parameters(log_params)))
    indexed = [d._replace(compartment=model.compartment_index(d.compartment)) for d in doses]
    reference = reference_amounts(K, indexed, np.array([0.7, 1.0]), np.array([0.75, 0.0]), times, 2)
    np.testing.assert_allclose(ours, reference, rtol=1e-7, atol=1e-7)
    assert ours[0, 0] == 0.0  # nothing has arrived before the lag time


def test_ode_path_matches_exact_path():
    exact = _lagged_oral_model(LinearCompartments(2, _rates))
    ode = _lagged_oral_model(OdeCompartments(2, lambda t, x, p: _rates(p) @ x, rtol=1e-9, atol=1e-9))
    doses = [Dose(0.0, 400.0), Dose(6.0, 400.0), Dose(7.0, 200.0, "central", 1.5)]
    times = jnp.asarray([0.5, 1.0, 6.5, 8.0, 12.0])
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(exact.population.typical, jnp.float64))
        table = dose_table_of(exact, doses, dtype=jnp.float64)
        a = np.asarray(amounts_at(exact, log_params, table, times.astype(jnp.float64)))
        b = np.asarray(amounts_at(ode, log_params, table, times.astype(jnp.float64)))
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_modes_reconstruct_rate_matrix_for_3_compartments():

    K = jnp.array([[-1.5, 0.0, 0.0], [1.5, -0.4, 0.2], [0.0, 0.1, -0.2]])
    m = modes(K)
    np.testing.assert_allclose(m.vectors @ jnp.diag(m.rates) @ m.inverse, K, atol=1e-5)


def test_ode_trajectory_in_one_pass_matches_the_exact_path_at_every_save_point():
    """Save points before, inside and at the end of an infusion, at a bolus's lag-shifted
    arrival (left limit: the bolus is not yet in) and between doses; t0 after the first dose."""
    exact = _lagged_oral_model(LinearCompartments(2, _rates))
    ode = _lagged_oral_model(OdeCompartments(2, lambda t, x, p: _rates(p) @ x, rtol=1e-9, atol=1e-9))
    doses = [Dose(0.0, 400.0), Dose(6.0, 400.0), Dose(7.0, 200.0, "central", 1.5)]
    times = np.array([2.0, 6.0, 6.75, 7.0, 7.5, 8.5, 9.0, 12.0, 24.0])
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(exact.population.typical, jnp.float64))
        table = dose_table_of(exact, doses, dtype=jnp.float64)
        reference = np.asarray(amounts_at(exact, log_params, table, jnp.asarray(np.concatenate([[1.0], times]))))
        params = ode.parameters(log_params)
        F, lag = ode.dose_attributes(params, jnp.float64)
        not_fresh = table._replace(fresh=jnp.zeros_like(table.fresh))  # the first dose is in the state at t0 = 1 h
        ours = np.asarray(ode.dynamics.trajectory(params, (), jnp.asarray(reference[0]), 1.0, jnp.asarray(times), not_fresh, F, lag))
    np.testing.assert_allclose(ours, reference[1:], rtol=1e-6, atol=1e-6)
    assert ours[2, 0] == pytest.approx(reference[2, 0] * np.exp(-1.2 * 0.75), rel=1e-6)  # 6.75 h: the 6 h dose arrives at 6.75, not yet in


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float64, 1e-11), (jnp.float32, 100 * np.finfo(np.float32).eps)])
def test_dose_free_2x2_closed_form_matches_expm(dtype, tolerance):
    """e^{K dt} x without eigenvectors (Putzer's formula, the path a filter step with no dose
    term takes for a 2-compartment model) against scipy's ``expm``, over rate constants from
    1e-4 to 50 /h and intervals from minutes to weeks; and against the analytic solution where
    ka = CL/V (K defective: the modal path has no eigenvector basis) and nearly so (scipy's
    ``expm`` itself is off by ~1e-10 there). The error allowed, relative to the largest amount:
    ``tolerance`` (float32: 100 ulps; float64: 1e-11, above the reference's own error) × the
    conditioning of the slow rate (|ad| / |det K|: det = ad − bc cancels when elimination is far
    slower than distribution, in the modal path alike) × (1 + |λ_slow| dt)."""
    from scipy.linalg import expm

    from assimilation.dosing import empty_dose_table

    def oral(ka, k, dt):  # depot -> central, the Bateman solution written without cancellation
        central_from_depot = ka * np.exp(-k * dt) * (dt if ka == k else np.expm1((k - ka) * dt) / (k - ka))
        return np.array([[np.exp(-ka * dt), 0.0], [central_from_depot, np.exp(-k * dt)]])

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(200):
        ka, k, k12, k21 = np.exp(rng.uniform(np.log(1e-4), np.log(50.0), 4))
        for M in (np.array([[-ka, 0.0], [ka, -k]]), np.array([[-(k + k12), k21], [k12, -k21]])):  # oral; mammillary
            cases.append((M, lambda dt, M=M: expm(M * dt)))
    for ka, k in ((0.7, 0.7), (0.3, 0.3 * (1 + 1e-7))):
        cases.append((np.array([[-ka, 0.0], [ka, -k]]), lambda dt, ka=ka, k=k: oral(ka, k, dt)))
    with jax.enable_x64(dtype == jnp.float64):
        def apply(K, dt, x):  # the dynamics' own path for a step with no dose slot
            dynamics = LinearCompartments(2, lambda p: K)
            return dynamics.propagate({}, None, x, jnp.zeros((), dtype), dt, empty_dose_table(0, dtype), jnp.ones(2, dtype), jnp.zeros(2, dtype))

        apply = jax.jit(apply)
        for K, reference in cases:
            det = np.linalg.det(K)
            slow = abs(det) / (0.5 * abs(np.trace(K)) + np.sqrt(0.25 * (K[0, 0] - K[1, 1]) ** 2 + K[0, 1] * K[1, 0]))
            condition = max(1.0, abs(K[0, 0] * K[1, 1]) / abs(det))
            for dt in (0.05, 1.0, 24.0, 336.0):
                x = np.abs(rng.normal(size=2)) * 100
                got = np.asarray(apply(jnp.asarray(K, dtype), jnp.asarray(dt, dtype), jnp.asarray(x, dtype)))
                want = reference(dt) @ x
                allowed = tolerance * condition * (1 + slow * dt) * np.abs(want).max()
                assert np.abs(got - want).max() <= allowed + 1e-30 * np.abs(x).max(), f"K={K}, dt={dt}: {got} vs {want}"  # floor: float32 underflow


@pytest.mark.parametrize("relative_gap", [0.0, 1e-5, 1e-4, 1e-3, 1e-2])
def test_equal_absorption_and_elimination_rates(relative_gap):
    """ka = CL/V makes the oral model's K defective (no eigenvector basis). The modal path, which
    steps with dose terms take, gives NaN at equality and 0 mg at a 1e-4 gap in float32; with the
    rates moved 3√ε apart its central amounts stay within 1 % of the Bateman solution (written
    without cancellation) after a bolus into the depot, and of solve_ivp for infusions into
    either compartment (0.6 % at worst, measured); its modes stay finite and reproduce K within
    1e-2. (The
    dose-free closed form is exact there: test_dose_free_2x2_closed_form_matches_expm.)"""
    model = load_model("one_compartment_oral")
    ka_i, cl_i, v_i = (model.population.names.index(n) for n in ("ka", "CL", "V"))
    log_params = np.log(np.asarray(model.population.typical, float))
    k = np.exp(log_params[cl_i] - log_params[v_i])
    log_params[ka_i] = np.log(k * (1 + relative_gap))
    ka = np.exp(log_params[ka_i])
    times = np.array([1.0, 10.0, 48.0])
    amounts = amounts_at(model, jnp.asarray(log_params, jnp.float32), dose_table_of(model, [Dose(0.0, 320.0)]), jnp.asarray(times, jnp.float32))
    spread = times if ka == k else np.expm1((k - ka) * times) / (k - ka)
    np.testing.assert_allclose(np.asarray(amounts)[:, 1], 320.0 * ka * np.exp(-k * times) * spread, rtol=1e-2)

    infusions = [Dose(0.0, 320.0, "depot", 2.0), Dose(6.0, 100.0, "central", 1.0)]  # an infusion into each
    times = [1.0, 2.5, 6.5, 10.0, 48.0]
    indexed = [d._replace(compartment=model.compartment_index(d.compartment)) for d in infusions]
    reference = reference_amounts(np.array([[-ka, 0.0], [ka, -k]]), indexed, np.ones(2), np.zeros(2), times, 2)
    ours = amounts_at(model, jnp.asarray(log_params, jnp.float32), dose_table_of(model, infusions), jnp.asarray(times, jnp.float32))
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-2, atol=1e-5 * reference.max())

    K = jnp.asarray([[-ka, 0.0], [ka, -k]], jnp.float32)
    m = modes(K)
    rebuilt = np.asarray(m.vectors) @ np.diag(np.asarray(m.rates)) @ np.asarray(m.inverse)
    assert np.all(np.isfinite(rebuilt)) and np.abs(rebuilt - np.asarray(K)).max() < 1e-2 * ka


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float64, 1e-10), (jnp.float32, 2e-5)])
def test_bolus_closed_form_matches_expm_superposition_and_the_modal_path(dtype, tolerance):
    """A step whose dose slots are all boluses (``boluses_only``, what filters pass when no
    delivering slot is an infusion) against e^{K(t1−t0)} x + Σ e^{K(t1−a)} e_c F·amt by scipy's
    ``expm``, over the boluses that count: arriving (time + lag) in [t0, t1), or since their own
    time for a fresh slot (a late record); not a slot given before t0 and already in the state,
    nor one arriving at or after t1 (left-continuity). And against the modal path on the same
    table. Error relative to the largest amount."""
    from scipy.linalg import expm

    from assimilation.dosing import DoseTable

    rng = np.random.default_rng(1)
    t0 = 2.0
    lag, F = np.array([0.4, 0.0]), np.array([0.8, 1.0])
    slots = [  # time, amount, compartment, fresh
        (1.0, 300.0, 0, False),  # arrived at 1.4 h, before t0: already in x
        (1.0, 200.0, 1, True),  # a late record: counts from 1.0 h
        (2.5, 400.0, 0, False),  # arrives 2.9 h
        (3.0, 100.0, 1, False),
    ]
    with jax.enable_x64(dtype == jnp.float64):
        table = DoseTable(jnp.asarray([s[0] for s in slots], dtype), jnp.asarray([s[1] for s in slots], dtype),
                          duration=jnp.zeros(4, dtype), compartment=jnp.asarray([s[2] for s in slots], jnp.int32),
                          fresh=jnp.asarray([s[3] for s in slots]), cursor=jnp.int32(4))
        for _ in range(40):
            ka, k, k12, k21 = np.exp(rng.uniform(np.log(1e-3), np.log(20.0), 4))
            for K in (np.array([[-ka, 0.0], [ka, -k]]), np.array([[-(k + k12), k21], [k12, -k21]])):
                dynamics = LinearCompartments(2, lambda p, K=K: jnp.asarray(K, dtype))
                x = np.abs(rng.normal(size=2)) * 50
                for t1 in (2.5, 3.0, 10.0, 100.0):
                    want = expm(K * (t1 - t0)) @ x
                    for time, amount, c, fresh in slots:
                        arrival = time + lag[c]
                        if (fresh or arrival >= t0) and arrival < t1:
                            want = want + expm(K * (t1 - arrival))[:, c] * F[c] * amount
                    args = ({}, modes(jnp.asarray(K, dtype)), jnp.asarray(x, dtype), jnp.asarray(t0, dtype), jnp.asarray(t1, dtype),
                            table, jnp.asarray(F, dtype), jnp.asarray(lag, dtype))
                    closed = np.asarray(dynamics.propagate(*args, boluses_only=True))
                    modal = np.asarray(dynamics.propagate(*args))
                    allowed = tolerance * np.abs(want).max() + 1e-30 * x.max()  # floor: float32 underflow after weeks
                    assert np.abs(closed - want).max() <= allowed, (K, t1, closed, want)
                    assert np.abs(closed - modal).max() <= allowed, (K, t1, closed, modal)
