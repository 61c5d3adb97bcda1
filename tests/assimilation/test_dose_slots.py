"""Propagating through only the dose slots that may deliver gives the filter exactly what the
whole ring buffer gives (the reference), for exact and ODE dynamics, uncertain lag times, boluses
into a depot, infusions and late dose records."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, LinearCompartments, OdeCompartments
from assimilation import particle_filter as pf
from assimilation.events import Reading, pack_events
from assimilation.online import _patient_keys

from .test_structure import _lagged_oral_model, _rates


@pytest.fixture(autouse=True)
def compact_every_batch(monkeypatch):
    """The compaction is tested on small batches, which by default keep one all-slots kernel."""
    monkeypatch.setattr(pf, "COMPACT_MIN_ROWS", 1)


MODELS = {  # tlag has between-patient variability, so each particle has its own lag time
    "exact": _lagged_oral_model(LinearCompartments(2, _rates), tlag_variance=0.3),
    "ode": _lagged_oral_model(OdeCompartments(2, lambda t, x, p: _rates(p) @ x, rtol=1e-7, atol=1e-7), tlag_variance=0.3),
}

EVENTS = [
    [Dose(0.0, 400.0), Reading(0.5, 2.0), Reading(1.5, 6.0), Dose(4.0, 300.0, "central", 3.0), Reading(5.0, 12.0),
     Dose(5.5, 400.0), Reading(6.0, 13.0), Reading(7.5, 14.0), Reading(20.0, 4.0)],
    [Dose(0.0, 200.0, "central", 1.0), Reading(0.5, 3.0), Dose(1.0, 400.0), Reading(3.0, 9.0), Reading(30.0, 1.0)],
    [Reading(1.0, 0.1), Dose(2.0, 400.0), Dose(2.5, 400.0), Reading(2.6, 4.0), Reading(9.0, 10.0)],
]
# Late dose records, given before the posterior's time and recorded afterwards: they count in full
LATE = [
    [Dose(19.0, 300.0, "central"), Reading(21.0, 12.0)],
    [Dose(29.0, 300.0, "central", 0.5), Reading(31.0, 8.0)],
    [Dose(8.0, 400.0), Reading(10.0, 12.0)],
]


def _run(model, compact: bool, counts: list):
    options = pf.Options(n_particles=200)
    rows = 4
    means = np.repeat(np.log(model.population.typical)[None], rows, axis=0)
    state = pf.initial_state(model, options, means, _patient_keys(0, rows))
    for events in (EVENTS, LATE):
        steps = pack_events(model, events, rows, np.float32)
        for s in range(steps.dose_valid.shape[1]):
            step = jax.tree.map(jnp.asarray, steps.step(s))
            slots, boluses_only = pf.dose_terms(model, state, step) if compact else (None, False)
            counts.append((slots, boluses_only))
            state, _ = pf._assimilate_jit(model, slots, boluses_only=boluses_only)(state, step)
    return state


@pytest.mark.parametrize("dynamics", list(MODELS))
def test_only_the_delivering_slots_give_the_same_filter_state_as_all_slots(dynamics):
    model = MODELS[dynamics]
    used: list = []
    compacted = _run(model, True, used)
    reference = _run(model, False, [])
    np.testing.assert_allclose(compacted.amounts, reference.amounts, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(compacted.log_weights, reference.log_weights, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(compacted.lost_dose, reference.lost_dose)
    # the test exercises the compaction: steps with no slot, one slot and more than one slot;
    # and for exact dynamics the closed form of steps whose delivering slots are all boluses
    slots = [count for count, _ in used]
    assert 0 in slots and 1 in slots and max(slots) >= 2 and max(slots) < 4, used
    assert any(boluses_only for _, boluses_only in used) == (dynamics == "exact"), used
    assert any(count and not boluses_only for count, boluses_only in used), used  # and infusions, modal


def test_a_slot_is_counted_while_any_particle_may_still_receive_it():
    """A bolus into the depot at 0 h with lag times spread over particles: it must stay in the
    propagation until the latest particle's lag has passed, and leave it afterwards."""
    model = MODELS["exact"]
    state = pf.initial_state(model, pf.Options(n_particles=200), np.log(model.population.typical)[None], _patient_keys(0, 1))
    first = jax.tree.map(jnp.asarray, pack_events(model, [[Dose(0.0, 400.0)]], 1, np.float32).step(0))
    state, _ = pf._assimilate_jit(model, None)(state, first)  # the state sits at 0 h, dose recorded
    lags = np.exp(np.asarray(state.log_params)[0, :, 4])
    late = float(np.max(lags))

    def reading_at(t):
        return jax.tree.map(jnp.asarray, pack_events(model, [[Reading(t, 1.0)]], 1, np.float32).step(0))

    assert pf.dose_terms(model, state, reading_at(0.9 * float(np.min(lags))))[0] == 0  # arrives for no particle yet
    assert pf.dose_terms(model, state, reading_at(late + 0.01))[0] == 1
    state, _ = pf._assimilate_jit(model, 1)(state, reading_at(late + 0.01))  # past every particle's arrival
    assert pf.dose_terms(model, state, reading_at(late + 5.0))[0] == 0


def test_a_small_batch_keeps_the_one_kernel_through_all_slots(monkeypatch):
    monkeypatch.setattr(pf, "COMPACT_MIN_ROWS", 64)
    model = MODELS["exact"]
    rows = {63: None, 64: 1}  # rows -> slots needed by a step with one delivering dose
    for n_rows, expected in rows.items():
        means = np.repeat(np.log(model.population.typical)[None], n_rows, axis=0)
        state = pf.initial_state(model, pf.Options(n_particles=16), means, _patient_keys(0, n_rows))
        step = jax.tree.map(jnp.asarray, pack_events(model, [[Dose(0.0, 300.0, "central"), Reading(1.0, 5.0)]] * n_rows, n_rows, np.float32).step(0))
        assert pf.dose_terms(model, state, step)[0] == expected
