"""The warfarin and neutropenia closed-loop benchmarks (benchmarks/closedloop_warfarin.py,
benchmarks/closedloop_neutropenia.py): their fast day-/cycle-wise trajectories agree with the
engine's own dose-table simulation, the decision kernels score what a simulation of the
candidate gives, and the rule-based arms do what their docstrings say."""

import importlib.util
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.models import exposure
from assimilation.parameters import prior_mean
from assimilation.simulate import amounts_at, dose_table_of

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wf():
    return _load("closedloop_warfarin")


@pytest.fixture(scope="module")
def nt():
    return _load("closedloop_neutropenia")


def _engine_analyte(model, log_params, doses, times):
    """Analyte 0 at ``times`` by the engine's dose-table propagation (assimilation.simulate)."""
    xs = amounts_at(model, jnp.asarray(log_params, jnp.float32), dose_table_of(model, doses), jnp.asarray(times, jnp.float32))
    params = model.parameters(jnp.asarray(log_params, jnp.float32))
    return np.array([float(model.analytes[0].predict(params, x)) for x in xs])


# ----------------------------------------------------------------------------- warfarin


def test_warfarin_daily_trajectory_matches_the_engine(wf):
    model = load_model(wf.MODEL)
    lp = prior_mean(model.population, {"CYP2C9": "*1/*3", "VKORC1": "G/A", "AGE": 70.0})
    daily = np.array([10.0, 7.5, 0.0, 5.0, 5.0, 2.5])
    fast = wf.true_inr(model, lp[None], daily[None], saves=4)[0]  # t = 0, 6, ..., 144 h
    times = np.arange(1, fast.size) * 6.0
    engine = _engine_analyte(model, lp, [Dose(24.0 * k, float(a), 0, 0.0) for k, a in enumerate(daily) if a > 0], times)
    np.testing.assert_allclose(fast[1:], engine, rtol=2e-3)
    assert fast[0] == pytest.approx(1.0, abs=1e-6) and fast.max() > 1.3  # untreated INR 1, then the drug acts


def test_warfarin_decision_scores_the_simulated_time_in_range(wf):
    """One particle (a patient's true parameters) at day 5, 6 h before its dose: the utility of
    dose d is the 7-day TTR of a simulation with d held (minus P(INR > 4), here 0 or 1)."""
    model = load_model(wf.MODEL)
    lp = prior_mean(model.population, {"CYP2C9": "*1/*1", "VKORC1": "G/G", "AGE": 55.0})
    history = np.full(5, 7.5)
    tau = 24.0 * 5 - wf.READ_BEFORE_DOSE
    table = dose_table_of(model, [Dose(24.0 * k, float(a), 0, 0.0) for k, a in enumerate(history)])
    x_tau = amounts_at(model, jnp.asarray(lp, jnp.float32), table, jnp.asarray([tau], jnp.float32))[0]
    utility = np.asarray(wf._decide_jit(model, wf.READ_BEFORE_DOSE, 1.0)(
        jnp.asarray(lp, jnp.float32)[None, None], x_tau[None, None]), np.float64)[0]
    for dose in (0.0, 5.0, 10.0, 15.0):
        doses = [Dose(24.0 * k, float(a), 0, 0.0) for k, a in enumerate(history)]
        doses += [Dose(24.0 * (5 + k), dose, 0, 0.0) for k in range(wf.LOOKAHEAD_DAYS)] if dose > 0 else []
        times = 24.0 * 5 + np.arange(1, 4 * wf.LOOKAHEAD_DAYS + 1) * 6.0
        inr = _engine_analyte(model, lp, doses, times)
        expected = float(exposure.fraction_of_time_in_range(times, inr, 2.0, 3.0, times[0], times[-1])) - float(inr.max() > 4.0)
        assert utility[wf.DOSES.index(dose)] == pytest.approx(expected, abs=0.02)


def test_warfarin_nomogram_as_stated(wf):
    assert wf.nomogram(5.0, 1.2) == (6.0, False)  # +20 %
    assert wf.nomogram(5.0, 1.8) == (5.5, False)  # +10 %
    assert wf.nomogram(5.0, 2.0) == (5.0, False) and wf.nomogram(5.0, 3.0) == (5.0, False)
    assert wf.nomogram(5.0, 3.2) == (4.5, False)  # −10 %
    assert wf.nomogram(5.0, 3.8) == (4.0, False)  # −15 %, 4.25 rounds to 4.0
    assert wf.nomogram(5.0, 4.6) == (4.0, True)  # hold, −20 %


def test_warfarin_nomogram_arm_acts_on_each_reading(wf):
    cohort = wf.make_cohort(3, 5)
    fixed = wf.run_arm("fixed", cohort, 5, 0, 0, log=lambda s: None)
    rule = wf.run_arm("nomogram", cohort, 5, 0, 0, log=lambda s: None)
    assert np.all(fixed.doses == 5.0) and np.all(fixed.readings == 0)
    assert np.all(rule.readings == len(wf.READ_DAYS))
    np.testing.assert_array_equal(rule.doses[:, :3], 5.0)  # unchanged before the first reading (day 3)
    np.testing.assert_allclose(rule.inr[:, : 24 * 3 + 1], fixed.inr[:, : 24 * 3 + 1], rtol=1e-6)  # same truth
    for i in range(3):  # the first reading decides day 3's dose by the rule
        reading = wf.meter_reading(fixed.inr[i, 24 * 3 - 6], cohort.meter_z[i, 0])
        new, hold = wf.nomogram(5.0, reading)
        assert rule.doses[i, 3] == (0.0 if hold else new) and rule.doses[i, 4] == new


def test_warfarin_rows_time_in_range(wf):
    hours = np.arange(24 * wf.DAYS + 1)
    inr = np.stack([np.full(hours.size, 2.5), 1.0 + 3.0 * hours / hours[-1]])  # in range; a ramp 1 -> 4
    rows = wf.rows_of("fixed", wf.ArmResult(inr, np.full((2, wf.DAYS), 5.0), np.zeros(2, int)), 0)
    first = rows[0]
    assert first["window_days"] == [0, 28]
    assert first["ttr_mean"] == pytest.approx((1.0 + 1.0 / 3.0) / 2.0, abs=1e-4)
    assert first["any_inr_above_4"] == 0.0 and first["ttr_ge_60"] == 0.5
    assert first["time_above_3"] == pytest.approx(1.0 / 6.0, abs=1e-4)  # the ramp spends 1/3 of the time above 3
    low, high = first["ttr_ci95"]
    assert low < first["ttr_mean"] < high


# ----------------------------------------------------------------------------- neutropenia


def test_neutropenia_cycle_matches_the_engine(nt):
    model = load_model(nt.MODEL)
    lp = np.asarray(prior_mean(model.population, {}))
    doses = np.array([[140.0, 100.0]])
    fast = nt.true_anc(model, lp[None], np.pad(doses, ((0, 0), (0, nt.CYCLES - 2))))[0]  # (CYCLES, T)
    times = np.array([24.0, 96.0, 170.0, 300.0, 504.0 + 48.0, 504.0 + 200.0])
    engine = _engine_analyte(model, lp, [Dose(0.0, 140.0, 0, 1.0), Dose(504.0, 100.0, 0, 1.0)], times)
    cycle, offset = (times // nt.CYCLE_H).astype(int), times % nt.CYCLE_H
    fast_at = fast[cycle, np.round(offset / nt.TRUTH_SAVE_H).astype(int) - 1]
    np.testing.assert_allclose(fast_at, engine, rtol=2e-3)
    assert fast[0].min() < 0.5 * float(np.exp(lp[list(model.population.names).index("Circ0")]))  # a real nadir


def test_neutropenia_decision_scores_the_simulated_nadir(nt):
    model = load_model(nt.MODEL)
    lp = np.asarray(prior_mean(model.population, {}))
    x = jnp.zeros((1, 1, model.n_compartments), jnp.float32)  # untreated, 2 h before the first dose
    utility = np.asarray(nt._decide_jit(model, 1.0)(jnp.asarray(lp, jnp.float32)[None, None], x,
                                                     jnp.ones((1, len(nt.CANDIDATES)), bool), jax.random.PRNGKey(0)[None]), np.float64)[0]
    times = jnp.asarray(nt.PRE_CYCLE_H + np.arange(1, 85) * 6.0, jnp.float32)
    params = model.parameters(jnp.asarray(lp, jnp.float32))

    @jax.jit
    @jax.vmap
    def engine_nadir(dose):  # the engine's dose-table propagation, one candidate per lane
        table = dose_table_of(model, [Dose(nt.PRE_CYCLE_H, 1.0, 0, 1.0)])
        xs = amounts_at(model, jnp.asarray(lp, jnp.float32), table._replace(amount=table.amount * dose), times)
        return jnp.min(jax.vmap(lambda x: model.analytes[0].predict(params, x))(xs))

    nadirs = np.asarray(engine_nadir(jnp.asarray(nt.CANDIDATES, jnp.float32)), np.float64)
    scored = 0
    for k, (dose, nadir) in enumerate(zip(nt.CANDIDATES, nadirs)):
        if min(abs(nadir - 0.5), abs(nadir - 1.5)) < 0.02:
            continue  # too close to a boundary to call
        expected = 1.0 if 0.5 <= nadir <= 1.5 else (-1.0 if nadir < 0.5 else 0.0)
        assert utility[k] == expected, (dose, nadir)
        scored += 1
    assert scored >= len(nt.CANDIDATES) - 2 and set(utility) >= {0.0, 1.0}


def test_neutropenia_label_rule_reduces_after_a_grade_4_reading(nt):
    cohort = nt.make_cohort(6, 3)
    bsa = nt.run_arm("bsa", cohort, 3, 0, 0, log=lambda s: None)
    rule = nt.run_arm("label_rule", cohort, 3, 0, 0, log=lambda s: None)
    np.testing.assert_array_equal(bsa.doses[:, 0], rule.doses[:, 0])
    np.testing.assert_allclose(bsa.doses[:, 0], [nt.round_dose(75.0 * b) for b in cohort.bsa])
    seen = nt._readings(load_model(nt.MODEL), cohort, bsa.doses, 0)  # cycle 1 is the same in both arms
    for i in range(6):
        low = any(r.value < 0.5 for r in seen[i])
        assert rule.doses[i, 1] == nt.round_dose((60.0 if low else 75.0) * cohort.bsa[i])
    assert all(isinstance(r, Reading) and r.analyte == "anc" for r in seen[0]) and len(seen[0]) == len(nt.READ_DAYS) + 1


def test_neutropenia_rows_fractions_add_up(nt):
    T = int(nt.CYCLE_H / nt.TRUTH_SAVE_H)
    anc = np.ones((4, nt.CYCLES, T)) * 3.0
    anc[0, :, 50] = 0.3
    anc[1, :, 60] = 1.0
    anc[2, :, 70] = 0.5  # the grade 4 boundary is not grade 4
    cohort = nt.Cohort(np.full(4, 2.0), np.zeros((4, nt.CYCLES, 9)), np.zeros((4, nt.CYCLES, 5)))
    rows = nt.rows_of("bsa", nt.ArmResult(anc, np.full((4, nt.CYCLES), 150.0), np.zeros(4, int)), cohort, 0)
    for r in rows:
        assert math.isclose(r["grade4"] + r["in_target"] + r["nadir_above_1_5"], 1.0)
        assert r["grade4"] == 0.25 and r["in_target"] == 0.5
        assert r["mean_dose_mg_per_m2"] == 75.0 and r["relative_dose_intensity"] == 1.0


def test_misspecified_cohorts_are_the_same_patients_with_variability_the_controller_lacks(wf, nt):
    names = list(load_model(wf.MODEL).population.names)
    plain, other = wf.make_cohort(50, 8), wf.make_cohort(50, 8, misspecified=True)
    np.testing.assert_array_equal(plain.meter_z, other.meter_z)
    changed = np.flatnonzero(np.any(plain.truth_log_params != other.truth_log_params, axis=0))
    assert sorted(names[k] for k in changed) == sorted(wf.EXTRA_SD)
    assert all(load_model(wf.MODEL).population.omega[k, k] == 0.0 for k in changed)  # the controller fixes them
    names = list(load_model(nt.MODEL).population.names)
    plain, other = nt.make_cohort(50, 8), nt.make_cohort(50, 8, misspecified=True)
    np.testing.assert_array_equal(plain.bsa, other.bsa)
    np.testing.assert_array_equal(plain.truth_log_params[:, 0], plain.truth_log_params[:, 3])  # no IOV unless asked
    shift = other.truth_log_params - plain.truth_log_params
    assert np.flatnonzero(np.any(shift != 0, axis=(0, 1))).tolist() == [names.index("CL")]
    assert 0.15 < np.std(shift[..., names.index("CL")]) < 0.25  # IOV SD 0.2 per cycle


def test_neutropenia_iov_decision_draws_the_next_cycles_clearance(nt):
    """64 copies of one patient: without IOV every copy has the same nadir, so each dose
    scores exactly -1, 0 or 1; the IOV controller draws each copy's next-cycle κ on CL
    (SD 0.2), so doses near a boundary score in between, and its lasting parameters are
    used as they are (the κ entry of the vector is replaced, not added to)."""
    plain, iov = nt.controller_model("filter"), nt.controller_model("filter_iov")
    assert iov.parameter_names == plain.parameter_names + ("iov_CL",)
    lp = np.asarray(prior_mean(plain.population, {}), np.float32)
    x = jnp.zeros((1, 64, plain.n_compartments), jnp.float32)
    allowed = jnp.ones((1, len(nt.CANDIDATES)), bool)
    key = jax.random.PRNGKey(3)[None]
    same = np.asarray(nt._decide_jit(plain, 1.0)(jnp.broadcast_to(jnp.asarray(lp), (1, 64, lp.size)), x, allowed, key))[0]
    lp_iov = np.concatenate([lp, [5.0]]).astype(np.float32)  # a stale κ far out: must not be used
    spread = np.asarray(nt._decide_jit(iov, 1.0)(jnp.broadcast_to(jnp.asarray(lp_iov), (1, 64, lp_iov.size)), x, allowed, key))[0]
    assert set(np.round(same, 6)) <= {-1.0, 0.0, 1.0}
    fractional = (np.abs(spread - np.round(spread)) > 1e-6).sum()
    assert fractional >= 2
    assert same[np.argmax(spread)] == 1.0  # the IOV choice lies inside the typical patient's target range
