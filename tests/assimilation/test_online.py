"""Online API: reproducibility, snapshots, batching equal to one-at-a-time, no recompilation."""

import jax
import numpy as np
import pytest

from assimilation import Dose, load_model, online
from assimilation.events import Reading
from assimilation.particle_filter import _assimilate_jit
from assimilation.simulate import amounts_at, dose_table_of

MODEL = load_model("one_compartment_oral")

PATIENTS = [  # different dose times, amounts, reading times and counts
    ({"WT": 60.0}, [Dose(0.0, 300.0), Reading(1.0, 6.5), Reading(5.0, 6.0), Dose(8.0, 300.0), Reading(9.5, 9.8)]),
    ({"WT": 80.0}, [Dose(0.5, 400.0), Reading(2.2, 8.1), Dose(12.5, 200.0), Reading(13.0, 6.0), Reading(20.0, 4.1), Reading(30.0, 0.05, censored=True)]),
    ({"WT": 70.0}, [Dose(1.0, 320.0), Dose(7.0, 320.0), Reading(7.0, 3.5)]),
]


def _leaves(posterior):
    return [np.asarray(a) for a in jax.tree.leaves(posterior.state)]


@pytest.mark.parametrize("method", ["pf", "enkf", "map"])
def test_same_seed_same_data_same_result(method):
    covariates, events = PATIENTS[1]
    runs = [online.update(online.init(MODEL, covariates, 5, 256, method), events) for _ in range(2)]
    for a, b in zip(_leaves(runs[0]), _leaves(runs[1])):
        np.testing.assert_array_equal(a, b)
    other = online.update(online.init(MODEL, covariates, 6, 256, method), events)
    assert not np.array_equal(online.particles(runs[0]).log_params, online.particles(other).log_params)


@pytest.mark.parametrize("method", ["pf", "enkf", "map"])
def test_snapshot_round_trip_continues_identically(method):
    covariates, events = PATIENTS[0]
    posterior = online.update(online.init(MODEL, covariates, 1, 256, method), events[:3])
    restored = online.from_bytes(online.to_bytes(posterior))
    for a, b in zip(_leaves(posterior), _leaves(restored)):
        np.testing.assert_array_equal(a, b)
    direct = online.update(posterior, events[3:])
    via_bytes = online.update(restored, events[3:])
    for a, b in zip(_leaves(direct), _leaves(via_bytes)):
        np.testing.assert_array_equal(a, b)
    times = [10.0, 12.0]
    np.testing.assert_array_equal(online.predict(direct, times).quantiles, online.predict(via_bytes, times).quantiles)


def test_a_snapshot_read_first_in_a_process_does_not_poison_later_filters():
    """Reading a snapshot traces ``initial_state`` abstractly; a jit built there and cached
    must hold constants, not tracers (found when an API process read a worker's checkpoint first)."""
    from assimilation.particle_filter import _prior_draw_jit

    covariates, events = PATIENTS[0]
    data = online.to_bytes(online.update(online.init(MODEL, covariates, 1, 200, "pf"), events[:3]))
    _prior_draw_jit.cache_clear()
    restored = online.from_bytes(data)
    fresh = online.update(online.init(MODEL, covariates, 1, 200, "pf"), events[:3])
    for a, b in zip(_leaves(restored), _leaves(fresh)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["pf", "enkf"])
def test_batch_equals_one_patient_at_a_time(method):
    seeds = [11, 22, 33]
    batch = online.update(online.init(MODEL, [c for c, _ in PATIENTS], seeds, 256, method), [e for _, e in PATIENTS])
    for i, (covariates, events) in enumerate(PATIENTS):
        alone = online.update(online.init(MODEL, covariates, [seeds[i]], 256, method), events)
        a, b = online.particles(batch, i), online.particles(alone, 0)
        assert a.time == b.time
        np.testing.assert_allclose(a.log_params, b.log_params, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.amounts, b.amounts, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.log_weights, b.log_weights, rtol=1e-4, atol=1e-4)


def test_changing_the_number_of_patients_within_a_bucket_does_not_recompile():
    # the step kernels these events may use: all slots (small batches), 0 or 1 slot delivering;
    # caller's state or donated; with or without the censored likelihood; boluses only or not;
    # no reset or steady-state dose (the cache is keyed on the call's exact arguments)
    kernels = [_assimilate_jit(MODEL, slots, donate, censored, boluses, False) for slots in (None, 0, 1) for donate in (False, True)
               for censored in (False, True) for boluses in (False, True)]
    events = [Dose(0.0, 300.0), Reading(2.0, 7.0)]
    online.update(online.init(MODEL, [{"WT": 70.0}] * 5, 0, 256, "pf"), [events] * 5)
    compiled = [kernel._cache_size() for kernel in kernels]
    assert sum(compiled) > 0
    for n in (6, 7, 8):
        online.update(online.init(MODEL, [{"WT": 70.0}] * n, 0, 256, "pf"), [events] * n)
    assert [kernel._cache_size() for kernel in kernels] == compiled


def test_predict_gives_quantiles_and_samples_consistent_with_particles():
    covariates, events = PATIENTS[0]
    posterior = online.update(online.init(MODEL, covariates, 0, 256, "pf"), events)
    times = np.array([10.0, 14.0, 24.0])
    regimen = [Dose(16.0, 300.0)]
    forecast = online.predict(posterior, times, regimen)
    assert forecast.quantiles.shape == (1, 3, 3) and forecast.samples.shape == (1, 256, 3)
    # Reference: each particle's parameters simulated from scratch through the whole dose history.
    p = online.particles(posterior)
    doses = [e for e in events if isinstance(e, Dose)] + regimen
    table = dose_table_of(MODEL, doses, slots=4)
    conc = jax.vmap(lambda lp: amounts_at(MODEL, lp, table, times.astype(np.float32))[:, 1] / jax.numpy.exp(lp[2]))(p.log_params)
    w = np.exp(p.log_weights.astype(np.float64))
    np.testing.assert_allclose(np.asarray(forecast.mean[0]), w @ np.asarray(conc, np.float64) / w.sum(), rtol=1e-3)
    assert np.all(np.diff(np.asarray(forecast.quantiles[0]), axis=0) >= 0)
    np.testing.assert_allclose(np.median(np.asarray(forecast.samples[0]), axis=0), forecast.quantiles[0, 1], rtol=0.05)
    with pytest.raises(ValueError, match="before the posterior"):
        online.predict(posterior, [1.0])


def test_update_refuses_readings_older_than_the_posterior():
    posterior = online.update(online.init(MODEL, {"WT": 70.0}, 0, 256, "pf"), [Dose(0.0, 300.0), Reading(5.0, 6.0)])
    with pytest.raises(ValueError, match="older than the posterior"):
        online.update(posterior, [Reading(4.0, 6.0)])


def test_too_many_overlapping_doses_are_refused_not_lost():
    posterior = online.init(MODEL, {"WT": 70.0}, 0, 64, "pf", dose_slots=2)
    infusions = [Dose(float(t), 100.0, "central", 10.0) for t in (0.0, 1.0, 2.0)]  # three running at t = 2 h
    with pytest.raises(ValueError, match="dose_slots=2"):
        online.update(posterior, infusions + [Reading(3.0, 5.0)])
    online.update(online.init(MODEL, {"WT": 70.0}, 0, 64, "pf", dose_slots=4), infusions + [Reading(3.0, 5.0)])


@pytest.mark.parametrize("method", ["pf", "enkf"])
def test_an_update_that_consumes_its_state_gives_the_same_result_and_spares_the_keys(method):
    from assimilation import ensemble_kalman, particle_filter
    from assimilation.events import pack_events
    from assimilation.online import _patient_keys

    module = {"pf": particle_filter, "enkf": ensemble_kalman}[method]
    options = module.Options(n_particles=256)
    means = np.repeat(np.log(MODEL.population.typical)[None], 4, axis=0)
    steps = pack_events(MODEL, [events for _, events in PATIENTS], 4, np.float32)
    keys = _patient_keys(0, 4)
    kept = module.initial_state(MODEL, options, means, keys)
    given_up = module.initial_state(MODEL, options, means, keys)
    expected = module.update(MODEL, options, kept, steps)
    result = module.update(MODEL, options, given_up, steps, donate=True)
    for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(kept.log_params).shape == (4, 256, MODEL.n_parameters)  # the caller's state is intact
    assert np.asarray(keys).shape == (4, 2)  # the keys the states were made from are not donated


def test_a_censored_reading_is_weighed_by_its_probability_below_lloq_in_any_batch():
    """A step with a reading below LLOQ runs the kernel with the censored likelihood (steps
    without one run a kernel that leaves it out). Censored at an LLOQ far above every particle's
    prediction, the reading has probability 1 under all of them: the evidence increment is
    log 1 = 0 whether the patient is alone or batched with an uncensored reading of the same
    step; read as a density at that value it would be ~−10¹¹."""
    history = [Dose(0.0, 300.0), Reading(2.0, 7.0)]
    censored = history + [Reading(6.0, 1e6, censored=True)]
    observed = history + [Reading(6.0, 5.0)]

    def evidence(streams):
        return np.asarray(online.update(online.init(MODEL, [{"WT": 70.0}] * len(streams), 0, 512, "pf"), streams).state.log_evidence)

    before = evidence([history, history])
    assert abs(evidence([censored])[0] - before[0]) < 1e-4
    increments = evidence([censored, observed]) - before
    assert abs(increments[0]) < 1e-4
    # the uncensored reading: a density, at most that of N(0, 0.7²) at its mode, log = −0.57
    assert increments[1] < -0.57
