"""The model structures people use, on the engine's own path (``amounts_at``, float64): 1-, 2-
and 3-compartment mammillary models (NONMEM's ADVAN1/3/11, and ADVAN2/4/12 with first-order
absorption) built with ``mammillary``, under boluses, infusions and oral doses with a lag time
and bioavailability (``Model.lag_time``, ``Model.bioavailability``); checked against the
textbook closed forms and scipy's solve_ivp of rate matrices written out by hand. And a user
ODE model (Michaelis-Menten elimination, ``OdeCompartments``) against solve_ivp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from assimilation import Additive, Analyte, Dose, LinearCompartments, Model, Population, load_model
from assimilation.simulate import amounts_at, dose_table_of
from assimilation.structure import mammillary

from .test_structure import reference_amounts

P = {"CL": 3.0, "V1": 20.0, "Q2": 5.0, "V2": 40.0, "Q3": 0.8, "V3": 150.0, "ka": 1.1, "F": 0.8, "tlag": 0.6}
TIMES = [0.3, 0.6, 0.9, 2.0, 5.0, 6.0, 6.5, 8.0, 12.0, 24.0, 48.0]

# name: (peripheral (flow, volume) pairs, oral)
STRUCTURES = {
    "1 cmt (ADVAN1)": ((), False),
    "1 cmt oral (ADVAN2)": ((), True),
    "2 cmt (ADVAN3)": ((("Q2", "V2"),), False),
    "2 cmt oral (ADVAN4)": ((("Q2", "V2"),), True),
    "3 cmt (ADVAN11)": ((("Q2", "V2"), ("Q3", "V3")), False),
    "3 cmt oral (ADVAN12)": ((("Q2", "V2"), ("Q3", "V3")), True),
}


def _model(peripherals, oral) -> Model:
    names = ["CL", "V1"] + [name for pair in peripherals for name in pair] + (["ka", "F", "tlag"] if oral else [])
    n = 1 + len(peripherals) + oral
    central = int(oral)
    compartments = (("depot",) if oral else ()) + ("central",) + tuple(f"peripheral{j + 1}" for j in range(len(peripherals)))
    lag = (lambda p: jnp.zeros(n).at[0].set(p["tlag"])) if oral else None
    fraction = (lambda p: jnp.ones(n).at[0].set(p["F"])) if oral else None
    return Model(
        name="structure-" + "-".join(names),
        population=Population(tuple(names), np.array([P[k] for k in names]), np.zeros((len(names), len(names)))),
        dynamics=LinearCompartments(n, mammillary("CL", "V1", peripherals, absorption="ka" if oral else None)),
        compartments=compartments,
        analytes=(Analyte("c", lambda p, x: x[central] / p["V1"], Additive(0.1)),),
        bioavailability=fraction, lag_time=lag,
    )


def _hand_written_rates(peripherals, oral) -> np.ndarray:
    """dA/dt = K A written element by element from the mass balance (units 1/h)."""
    k10, k12, k21, k13, k31 = P["CL"] / P["V1"], P["Q2"] / P["V1"], P["Q2"] / P["V2"], P["Q3"] / P["V1"], P["Q3"] / P["V3"]
    rows = {
        0: [[-k10]],
        1: [[-(k10 + k12), k21], [k12, -k21]],
        2: [[-(k10 + k12 + k13), k21, k31], [k12, -k21, 0.0], [k13, 0.0, -k31]],
    }[len(peripherals)]
    K = np.array(rows, float)
    if oral:
        K = np.pad(K, ((1, 0), (1, 0)))
        K[0, 0], K[1, 0] = -P["ka"], P["ka"]
    return K


def _doses(oral):
    if oral:  # tablets into the depot (lag, F), then an IV infusion and an IV bolus into the central compartment
        return [Dose(0.0, 500.0), Dose(6.0, 250.0), Dose(5.0, 100.0, "central", 1.5), Dose(12.0, 80.0, "central")]
    return [Dose(0.0, 500.0), Dose(5.0, 300.0, 0, 1.5), Dose(12.0, 80.0), Dose(12.5, 200.0, 0, 8.0)]


def _engine_amounts(model, doses, times):
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        return np.asarray(amounts_at(model, log_params, dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_mammillary_models_match_solve_ivp(name):
    peripherals, oral = STRUCTURES[name]
    model = _model(peripherals, oral)
    K = _hand_written_rates(peripherals, oral)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(model.dynamics.rate_matrix({k: jnp.float64(v) for k, v in P.items()})), K, rtol=1e-15)
    doses = _doses(oral)
    indexed = [d._replace(compartment=model.compartment_index(d.compartment)) for d in doses]
    n = K.shape[0]
    F = np.ones(n) if not oral else np.r_[P["F"], np.ones(n - 1)]
    lag = np.zeros(n) if not oral else np.r_[P["tlag"], np.zeros(n - 1)]
    reference = reference_amounts(K, indexed, F, lag, TIMES, n)
    np.testing.assert_allclose(_engine_amounts(model, doses, TIMES), reference, rtol=1e-7, atol=1e-8 * reference.max())


def test_one_compartment_closed_forms():
    """A bolus (D e^{−kt}), a zero-order infusion (R/k (1 − e^{−kt}), then decay) and an oral dose
    after a lag (Bateman: F D ka/(ka − k) (e^{−k τ} − e^{−ka τ}), τ = t − tlag), each alone."""
    k, ka, F, tlag = P["CL"] / P["V1"], P["ka"], P["F"], P["tlag"]
    t = np.array(TIMES)
    iv, oral = _model((), False), _model((), True)
    bolus = _engine_amounts(iv, [Dose(0.0, 500.0)], TIMES)[:, 0]
    np.testing.assert_allclose(bolus, 500.0 * np.exp(-k * t), rtol=1e-12)
    rate, duration = 300.0 / 1.5, 1.5
    infusion = _engine_amounts(iv, [Dose(0.0, 300.0, 0, duration)], TIMES)[:, 0]
    during = rate / k * -np.expm1(-k * np.minimum(t, duration))
    np.testing.assert_allclose(infusion, during * np.exp(-k * np.clip(t - duration, 0, None)), rtol=1e-12)
    tablets = _engine_amounts(oral, [Dose(0.0, 500.0)], TIMES)[:, 1]
    tau = np.clip(t - tlag, 0.0, None)
    np.testing.assert_allclose(tablets, F * 500.0 * ka / (ka - k) * (np.exp(-k * tau) - np.exp(-ka * tau)), rtol=1e-10, atol=1e-12)
    assert tablets[0] == 0.0 and tablets[1] == 0.0  # nothing has arrived by the lag time (left limit at 0.6 h)


def test_two_compartment_bolus_closed_form():
    """A1(t) = D [(α − k21) e^{−αt} + (k21 − β) e^{−βt}] / (α − β), with α + β = k10 + k12 + k21 and
    α β = k10 k21 (Gibaldi & Perrier, Pharmacokinetics, 2nd ed., ch. 2)."""
    k10, k12, k21 = P["CL"] / P["V1"], P["Q2"] / P["V1"], P["Q2"] / P["V2"]
    total = k10 + k12 + k21
    root = np.sqrt(total**2 - 4 * k10 * k21)
    alpha, beta = (total + root) / 2, (total - root) / 2
    t = np.array(TIMES)
    expected = 500.0 * ((alpha - k21) * np.exp(-alpha * t) + (k21 - beta) * np.exp(-beta * t)) / (alpha - beta)
    central = _engine_amounts(_model((("Q2", "V2"),), False), [Dose(0.0, 500.0)], TIMES)[:, 0]
    np.testing.assert_allclose(central, expected, rtol=1e-10)


def test_a_rate_matrix_that_omits_a_flow_is_caught():
    """The solve_ivp check can fail: the 3-compartment model without its second peripheral
    compartment's return flow gives other amounts."""
    peripherals, oral = STRUCTURES["3 cmt (ADVAN11)"]
    K = _hand_written_rates(peripherals, oral)
    K[0, 2] = 0.0
    doses = _doses(False)
    reference = reference_amounts(K, [d._replace(compartment=0) for d in doses], np.ones(3), np.zeros(3), TIMES, 3)
    ours = _engine_amounts(_model(peripherals, oral), doses, TIMES)
    assert np.abs(ours - reference).max() > 1e-3 * reference.max()


def test_user_ode_model_matches_solve_ivp():
    """Michaelis-Menten elimination after oral doses (lag, F) and an IV infusion, written again
    here from its equations and solved by LSODA between the input breakpoints."""
    model = load_model("assimilation/models/examples/michaelis_menten_oral.py")
    p = dict(zip(model.population.names, model.population.typical))
    doses = [Dose(0.0, 600.0), Dose(12.0, 300.0), Dose(20.0, 200.0, "central", 2.0)]

    def rhs(t, a, infusion):
        c = a[1] / p["V"]
        return [-p["ka"] * a[0], p["ka"] * a[0] - p["Vmax"] * c / (p["Km"] + c) + infusion]

    events = sorted({0.0, 0.5, 12.5, 20.0, 22.0, *TIMES, 30.0})
    a, out = np.zeros(2), {}
    for lo, hi in zip(events[:-1], events[1:]):
        out[lo] = a.copy()
        if lo in (0.5, 12.5):  # tablets arrive tlag after they are given
            a[0] += p["F"] * (600.0 if lo == 0.5 else 300.0)
        infusion = 100.0 if 20.0 <= lo < 22.0 else 0.0
        a = solve_ivp(rhs, (lo, hi), a, args=(infusion,), rtol=1e-11, atol=1e-12, method="LSODA").y[:, -1]
    out[events[-1]] = a
    reference = np.array([out[t] for t in TIMES])
    with jax.enable_x64(True):
        log_params = jnp.log(jnp.asarray(model.population.typical, jnp.float64))
        ours = np.asarray(amounts_at(model, log_params, dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(TIMES)))
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * reference.max())
