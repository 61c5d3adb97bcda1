"""The live assimilator against the online API called directly on the sorted events."""

import random
import time

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose
from assimilation.events import CovariateChange, Reading, SensorChange
from assimilation.online import init, predict, update
from ingest.records import Batch, StoredDose, StoredReading
from ingest.sqlite_store import SqliteStore
from mipdstream.service.assimilator import Assimilator, FilterSettings, Timing, patient_seed
from mipdstream.service.state_db import CovariateChangeRecord, PatientRecord, ServiceDB

MODEL = "two_compartment_infusion"
ORIGIN = 1_800_000_000.0
FILTERS = FilterSettings(n_particles=256, seed=7)
COVARIATES = {"p1": {"CRCL": 60.0, "WT": 80.0}, "p2": {"CRCL": 120.0, "WT": 60.0}}


def stored_events(patient_id: str, scale: float):
    """Two 1 g / 1 h infusions and eight levels from a patient whose clearance is `scale` x typical."""
    doses = [StoredDose(patient_id, "pump", f"{patient_id}-d{k}", k, "vancomycin", 1000.0, "iv",
                        ORIGIN + 3600 * t, ORIGIN + 3600 * t, duration_s=3600.0) for k, t in enumerate((0.0, 12.0))]
    cl, v1 = 4.5 * scale, 58.4
    levels = [(t, 1000 / cl * (1 - np.exp(-cl / v1)) * np.exp(-cl / v1 * (t - 1))) for t in (2.0, 4.0, 6.0, 10.0)]
    levels += [(t + 12, c * 1.6) for t, c in levels]
    readings = [StoredReading(patient_id, "poc", f"{patient_id}-r{k}", k, "concentration", float(c), "mg/L",
                              ORIGIN + 3600 * t, ORIGIN + 3600 * t) for k, (t, c) in enumerate(levels)]
    return readings, doses


def reference(patient_id: str, readings, doses, covariates: dict | None = None, changes=()):
    events = [Reading((r.measured_at - ORIGIN) / 3600, r.value, 0) for r in readings] + list(changes)
    events += [Dose((d.given_at - ORIGIN) / 3600, d.amount_mg, None, d.duration_s / 3600) for d in doses]
    covariates = covariates or COVARIATES[patient_id]
    prior = init(MODEL, covariates, patient_seed(FILTERS.seed, patient_id), FILTERS.n_particles, FILTERS.method)
    return update(prior, events)


def assert_same_posterior(a, b):
    np.testing.assert_allclose(np.asarray(a.state.log_params), np.asarray(b.state.log_params), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.state.log_weights), np.asarray(b.state.log_weights), rtol=1e-4, atol=1e-4)


@pytest.fixture
def world(tmp_path):
    db = ServiceDB(tmp_path / "service.sqlite")
    store = SqliteStore(tmp_path / "store.sqlite")
    for pid, covariates in COVARIATES.items():
        db.add_patient(PatientRecord(pid, MODEL, covariates, ORIGIN))
    yield db, store
    store.close()
    db.close()


def assimilate_stored(db, store, batch):
    """Store ``batch``, assimilate it with a fresh assimilator, stop it (checkpoints written)."""
    store.write(batch)
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.01)).start()
    assimilator.submit(batch)
    wait_idle(assimilator)
    assimilator.stop()
    return assimilator


def wait_idle(assimilator, timeout=120):
    deadline = time.time() + timeout
    while not assimilator.idle() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert assimilator.idle()


def test_shuffled_micro_batches_give_the_posterior_of_the_sorted_events(world):
    db, store = world
    timing = Timing(reorder_window_s=0.05, batch_window_s=0.02, checkpoint_interval_s=0.5)
    assimilator = Assimilator(db, store, FILTERS, timing)
    summaries = []
    assimilator.add_summary_sink(summaries.extend)
    assimilator.start()
    everything = {pid: stored_events(pid, s) for pid, s in (("p1", 0.6), ("p2", 1.3))}
    items = [(r, None) for pid in everything for r in everything[pid][0]] + [(None, d) for pid in everything for d in everything[pid][1]]
    random.Random(3).shuffle(items)
    for chunk in (items[i : i + 3] for i in range(0, len(items), 3)):
        batch = Batch([r for r, _ in chunk if r], [d for _, d in chunk if d])
        store.write(batch)
        assimilator.submit(batch)
        time.sleep(0.03)
    wait_idle(assimilator)
    assimilator.stop()
    for pid, (readings, doses) in everything.items():
        posterior, t = assimilator.posterior(pid)
        assert t == pytest.approx(22.0)
        assert_same_posterior(posterior, reference(pid, readings, doses))
        last = [s for s in summaries if s.patient_id == pid][-1]
        forecast = predict(posterior, [22.0], levels=(0.05, 0.25, 0.5, 0.75, 0.95))
        assert last.time_h == pytest.approx(22.0) and last.epoch_s == pytest.approx(ORIGIN + 22 * 3600)
        np.testing.assert_allclose(last.quantiles, np.asarray(forecast.quantiles).ravel(), rtol=1e-4)
        assert list(last.quantiles) == sorted(last.quantiles)
    assert assimilator.metrics.rewinds.labels("rewind")._value.get() > 0  # the shuffle did produce late events
    # each of the 20 events counted once, though rewinds assimilated some of them again
    assert assimilator.metrics.assimilated._value.get() == sum(len(r) + len(d) for r, d in everything.values())


@pytest.mark.parametrize("late", [False, True])
def test_restart_restores_checkpoints_and_replays_what_came_after(world, late):
    db, store = world
    readings, doses = stored_events("p1", 0.8)
    before = [0, 2, 3] if late else [0, 1, 2]
    first = Batch([readings[i] for i in before], doses[:1])
    store.write(first)
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.01)).start()
    assimilator.submit(first)
    wait_idle(assimilator)
    assimilator.stop()  # writes the checkpoint
    assert db.checkpoint("p1").n_events == 4
    # Committed while the service was down (or killed after the commit, before assimilation).
    # With `late`, one of them is older than the checkpoint: recovery must replay from the prior.
    store.write(Batch([r for i, r in enumerate(readings) if i not in before], doses[1:]))
    restarted = Assimilator(db, store, FILTERS, Timing()).start()
    restarted.stop()
    posterior, t = restarted.posterior("p1")
    assert_same_posterior(posterior, reference("p1", readings, doses))
    assert t == pytest.approx(22.0)
    assert restarted.metrics.rewinds.labels("recovery")._value.get() == (1 if late else 0)


def test_readings_of_unconfigured_patients_and_unmodelled_analytes_are_ignored(world):
    db, store = world
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.01)).start()
    stray = StoredReading("nobody", "dev", "x1", 1, "concentration", 5.0, "mg/L", ORIGIN + 3600, ORIGIN + 3600)
    other = StoredReading("p1", "dev", "x2", 2, "751-8", 5.0, "10*9/L", ORIGIN + 3600, ORIGIN + 3600)
    assimilator.submit(Batch([stray, other]))
    wait_idle(assimilator)
    assimilator.stop()
    assert assimilator.metrics.assimilated._value.get() == 0
    assert assimilator.posterior("p1")[0].state.time[0] == 0.0


RENAL_FAILURE = {"CRCL": 20.0, "WT": 80.0}


@pytest.mark.parametrize("told", [True, False], ids=["reconfigure-called", "noticed-on-tick"])
def test_a_covariate_change_rebuilds_the_posterior_on_the_new_prior(world, told):
    """Creatinine clearance falls from 60 to 20 mL/min: the running posterior is replaced by the
    one the new prior gives on the whole history, and later events build on it. In one process
    the API tells the assimilator; in a scaled-out deployment the worker notices the changed
    record on its wall-clock tick."""
    db, store = world
    readings, doses = stored_events("p1", 0.8)
    timing = Timing(reorder_window_s=0.0, batch_window_s=0.01, tick_s=0.0 if told else 0.2)
    assimilator = Assimilator(db, store, FILTERS, timing).start()
    first = Batch(readings[:4], doses[:1])
    store.write(first)
    assimilator.submit(first)
    wait_idle(assimilator)
    before = assimilator.posterior("p1")[0]
    db.add_patient(PatientRecord("p1", MODEL, RENAL_FAILURE, ORIGIN))
    if told:
        assimilator.reconfigure("p1")
    else:
        deadline = time.time() + 30
        while dict(assimilator.posterior("p1")[0].covariates[0]) != RENAL_FAILURE and time.time() < deadline:
            time.sleep(0.1)
    wait_idle(assimilator)
    assert_same_posterior(assimilator.posterior("p1")[0], reference("p1", readings[:4], doses[:1], RENAL_FAILURE))
    assert dict(assimilator.posterior("p1")[0].covariates[0]) == RENAL_FAILURE
    assert assimilator.metrics.assimilated._value.get() == 5  # the replay is not new data
    assert not np.allclose(np.asarray(before.state.log_params), np.asarray(assimilator.posterior("p1")[0].state.log_params))
    rest = Batch(readings[4:], doses[1:])
    store.write(rest)
    assimilator.submit(rest)
    wait_idle(assimilator)
    assimilator.stop()
    assert_same_posterior(assimilator.posterior("p1")[0], reference("p1", readings, doses, RENAL_FAILURE))


def test_a_checkpoint_from_before_a_covariate_change_is_not_restored(world):
    """Changed while the worker was down: the checkpoint holds the old prior, so recovery replays."""
    db, store = world
    readings, doses = stored_events("p1", 0.8)
    assimilate_stored(db, store, Batch(readings, doses))
    db.add_patient(PatientRecord("p1", MODEL, RENAL_FAILURE, ORIGIN))
    restarted = Assimilator(db, store, FILTERS, Timing()).start()
    restarted.stop()
    assert_same_posterior(restarted.posterior("p1")[0], reference("p1", readings, doses, RENAL_FAILURE))
    assert restarted.metrics.rewinds.labels("recovery")._value.get() == 1


def test_a_covariate_change_from_a_time_holds_from_then_on_and_survives_a_restart(world):
    """Creatinine clearance falls from 60 to 20 mL/min at 8 h: the posterior is the one the
    online API gives with the change in its place (not a refit on the new prior), the
    checkpoint taken after it is restored on restart without a replay, and a later change
    that the restarted worker had not seen makes recovery replay."""
    db, store = world
    readings, doses = stored_events("p1", 0.8)
    db.add_covariate_change("p1", CovariateChangeRecord(ORIGIN + 8 * 3600, RENAL_FAILURE))
    assimilator = assimilate_stored(db, store, Batch(readings, doses))
    expected = reference("p1", readings, doses, changes=[CovariateChange(8.0, RENAL_FAILURE)])
    assert_same_posterior(assimilator.posterior("p1")[0], expected)
    assert dict(assimilator.posterior("p1")[0].covariates[0]) == {**COVARIATES["p1"], **RENAL_FAILURE}
    refit = reference("p1", readings, doses, {**COVARIATES["p1"], **RENAL_FAILURE})
    assert not np.allclose(np.asarray(expected.state.log_params), np.asarray(refit.state.log_params), atol=1e-3)
    restarted = Assimilator(db, store, FILTERS, Timing()).start()
    restarted.stop()
    assert restarted.metrics.rewinds.labels("recovery")._value.get() == 0
    assert_same_posterior(restarted.posterior("p1")[0], expected)
    db.add_covariate_change("p1", CovariateChangeRecord(ORIGIN + 20 * 3600, {"CRCL": 40.0}))
    again = Assimilator(db, store, FILTERS, Timing()).start()
    again.stop()
    assert again.metrics.rewinds.labels("recovery")._value.get() == 1
    assert_same_posterior(again.posterior("p1")[0], reference(
        "p1", readings, doses, changes=[CovariateChange(8.0, RENAL_FAILURE), CovariateChange(20.0, {"CRCL": 40.0})]))


def test_a_new_isf_device_is_a_sensor_change_live_and_after_a_restart(tmp_path):
    """A vancomycin patient's ISF patch "patch-a" is replaced by "patch-b" at 14 h. Arriving in
    one batch with patch-b's readings first, the posterior is the online API's with a
    SensorChange at patch-b's first reading (the first device in time is the original one,
    whatever the arrival order); a restart restores it without a replay; a third patch later
    is one more change."""
    db, store = ServiceDB(tmp_path / "service.sqlite"), SqliteStore(tmp_path / "store.sqlite")
    covariates = {"CRCL": 100.0, "WT": 75.0, "DIAL": 0}
    db.add_patient(PatientRecord("v1", "vancomycin", covariates, ORIGIN))
    doses = [StoredDose("v1", "pump", f"d{k}", k, "vancomycin", 1000.0, "iv", ORIGIN + 3600 * t, ORIGIN + 3600 * t,
                        duration_s=3600.0) for k, t in enumerate((0.0, 12.0))]

    def isf(device, hours, value):
        return [StoredReading("v1", device, f"{device}-{t}", k, "x-mipd-vancomycin-isf", value, "mg/L", ORIGIN + 3600 * t,
                              ORIGIN + 3600 * t) for k, t in enumerate(hours)]

    plasma = [StoredReading("v1", "poc", "p1", 1, "20578-1", 11.0, "mg/L", ORIGIN + 3600 * 11.5, ORIGIN + 3600 * 11.5)]
    readings = isf("patch-b", (14.0, 16.0, 18.0), 19.0) + plasma + isf("patch-a", (2.0, 4.0, 6.0, 8.0, 10.0), 12.0)
    def live(batch):  # started before the batch is stored: its events come by the live path, not recovery
        assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.01)).start()
        store.write(batch)
        assimilator.submit(batch)
        wait_idle(assimilator)
        assimilator.stop()
        return assimilator

    try:
        assimilator = live(Batch(readings, doses))

        def expected(*changes):
            events = [Reading((r.measured_at - ORIGIN) / 3600, r.value, "plasma" if r.analyte == "20578-1" else "isf")
                      for r in store.readings("v1")] + list(changes)
            events += [Dose((d.given_at - ORIGIN) / 3600, d.amount_mg, None, d.duration_s / 3600) for d in doses]
            return update(init("vancomycin", covariates, patient_seed(FILTERS.seed, "v1"), FILTERS.n_particles), events)

        changed = expected(SensorChange(14.0, "isf"))
        assert_same_posterior(assimilator.posterior("v1")[0], changed)
        assert not np.allclose(np.asarray(expected().state.log_params), np.asarray(changed.state.log_params), atol=1e-3)
        restarted = Assimilator(db, store, FILTERS, Timing()).start()
        restarted.stop()
        assert restarted.metrics.rewinds.labels("recovery")._value.get() == 0
        assert_same_posterior(restarted.posterior("v1")[0], changed)
        assimilator = live(Batch(isf("patch-c", (26.0, 28.0), 9.0), []))
        assert assimilator.metrics.rewinds.labels("recovery")._value.get() == 0
        assert_same_posterior(assimilator.posterior("v1")[0], expected(SensorChange(14.0, "isf"), SensorChange(26.0, "isf")))
    finally:
        store.close()
        db.close()


def test_an_implausible_reading_raises_its_alert_from_the_batched_checks(world, tmp_path, monkeypatch):
    """Two patients' new levels (each after a second dose that the check must carry the start
    posterior through) arrive together: both are checked in one call, and only the level 30x
    what the model predicts raises an implausible-reading alert."""
    import mipdstream.service.policy as policy
    from mipdstream.config import Settings

    calls = []

    def counted(model, samples, histories, readings):
        calls.append([len(r) for r in readings])
        return check_patients(model, samples, histories, readings)

    check_patients = policy.check_patients
    monkeypatch.setattr(policy, "check_patients", counted)
    db, store = world
    settings = Settings(data_dir=tmp_path, filter_particles=FILTERS.n_particles, filter_seed=FILTERS.seed)
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.05),
                              evaluator=policy.PolicyEvaluator(settings)).start()
    events = {pid: stored_events(pid, 1.0) for pid in COVARIATES}
    first = Batch([r for pid in events for r in events[pid][0][:4]], [events[pid][1][0] for pid in events])
    store.write(first)
    assimilator.submit(first)
    wait_idle(assimilator)
    outlier = events["p1"][0][4]._replace(value=30 * events["p1"][0][4].value)
    second = Batch([outlier, events["p2"][0][4]], [events[pid][1][1] for pid in events])  # at 14 h, after the 12 h doses
    store.write(second)
    assimilator.submit(second)
    wait_idle(assimilator)
    assimilator.stop()
    assert calls == [[4, 4], [1, 1]]  # per batch, both patients' new readings in one call
    implausible = {pid: [a for a in db.alerts(pid) if a.kind == "implausible_reading" and a.time_h == pytest.approx(14.0)]
                   for pid in COVARIATES}
    assert len(implausible["p1"]) == 1 and implausible["p2"] == []
    details = implausible["p1"][0].details
    assert details["tail_probability"] < 1e-3 and details["pit"] > 0.5 and details["provenance"]["model_id"] == MODEL


def test_a_warfarin_patient_gets_a_daily_oral_dose_recommendation(tmp_path):
    """The live policy for a non-AUC drug: a patient on 5 mg a day whose INR barely moves by
    day 4 gets a recommendation of a higher once-daily oral dose (no infusion time), with the
    numbers of the time-in-range target."""
    import mipdstream.service.policy as policy
    from mipdstream.config import Settings

    db = ServiceDB(tmp_path / "service.sqlite")
    store = SqliteStore(tmp_path / "store.sqlite")
    db.add_patient(PatientRecord("w1", "warfarin_hamberg", {"CYP2C9": "*1/*1", "VKORC1": "G/A", "AGE": 60.0}, ORIGIN))
    settings = Settings(data_dir=tmp_path, filter_particles=256, filter_seed=3)
    assimilator = Assimilator(db, store, FilterSettings(n_particles=256, seed=3), Timing(reorder_window_s=0.0, batch_window_s=0.05),
                              evaluator=policy.PolicyEvaluator(settings)).start()
    doses = [StoredDose("w1", "box", f"d{k}", k, "warfarin", 5.0, "oral", ORIGIN + 86400 * k, ORIGIN + 86400 * k, duration_s=0.0)
             for k in range(4)]
    readings = [StoredReading("w1", "inr-meter", f"r{k}", k, "inr", value, "{INR}", ORIGIN + 3600 * t, ORIGIN + 3600 * t)
                for k, (t, value) in enumerate(((48.0, 1.1), (72.0, 1.2), (90.0, 1.3)))]
    batch = Batch(readings, doses)
    store.write(batch)
    assimilator.submit(batch)
    wait_idle(assimilator, timeout=600)
    assimilator.stop()
    alerts = db.alerts("w1")
    recommended = [a for a in alerts if a.kind == "recommendation_available"]
    assert recommended, [a.kind for a in alerts]
    regimen = recommended[-1].details["regimen"]
    assert regimen["interval"] == 24.0 and regimen["duration"] == 0.0 and 5.0 < regimen["amount"] <= 15.0
    assert recommended[-1].details["metric"] == "time_in_range"
    store.close()
    db.close()


def test_checkpoints_are_written_off_the_assimilation_thread_and_flushed_on_stop(world, monkeypatch):
    import threading

    db, store = world
    writers = []
    save = db.save_checkpoints
    monkeypatch.setattr(db, "save_checkpoints", lambda cps, writer="": (writers.append((threading.current_thread().name,
                                                                                        [c.patient_id for c in cps])),
                                                                       save(cps, writer)))
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.05, checkpoint_interval_s=0.2)).start()
    readings, doses = stored_events("p1", 1.0)
    first = Batch(readings[:4], doses[:1])
    store.write(first)
    assimilator.submit(first)
    wait_idle(assimilator)
    deadline = time.time() + 10
    while db.checkpoint("p1") is None and time.time() < deadline:
        time.sleep(0.05)
    assert db.checkpoint("p1") is not None and writers[0] == ("mipd-checkpoint", ["p1"])  # written while running
    second = Batch(readings[4:], doses[1:])
    store.write(second)
    assimilator.submit(second)
    wait_idle(assimilator)
    assimilator.stop()
    assert db.checkpoint("p1").n_events == len(readings) + len(doses)  # the last state is saved by stop()


def test_a_checkpoint_round_is_spread_over_the_interval_in_chunks(world, monkeypatch):
    """One patient per transaction here (64 in production): the second write comes a share
    of 80 % of the interval after the first, not at once; stop() writes without pausing."""
    import mipdstream.service.assimilator as module

    db, store = world
    monkeypatch.setattr(module, "CHECKPOINT_CHUNK", 1)
    saved = []
    save = db.save_checkpoints
    monkeypatch.setattr(db, "save_checkpoints", lambda cps, writer="": (saved.append((time.monotonic(), [c.patient_id for c in cps])),
                                                                       save(cps, writer)))
    assimilator = Assimilator(db, store, FILTERS, Timing(reorder_window_s=0.0, batch_window_s=0.02, checkpoint_interval_s=1.0)).start()
    batch = Batch(*(a + b for a, b in zip(stored_events("p1", 1.0), stored_events("p2", 1.2))))
    store.write(batch)
    assimilator.submit(batch)
    wait_idle(assimilator)
    deadline = time.time() + 10
    while len(saved) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert [ids for _, ids in saved[:2]] == [["p1"], ["p2"]]
    assert saved[1][0] - saved[0][0] >= 0.25  # 0.8 s shared by two chunks
    stopping = time.monotonic()
    assimilator.stop()
    assert time.monotonic() - stopping < 5
    assert db.checkpoint("p1") is not None and db.checkpoint("p2") is not None


def test_resample_move_in_the_live_service_keeps_the_posterior_and_its_diversity(world):
    """With ``rejuvenate_after=1`` every resampled patient also gets resample-move steps
    against its stored history: the posterior keeps the same events and time, agrees with the
    plain filter's on the weighted mean of log CL and log V1 (0.35 posterior SD: two Monte
    Carlo approximations of one posterior), its particles' amounts are those their moved
    parameters imply, and a restart restores it from its checkpoint without a replay."""
    db, store = world
    readings, doses = stored_events("p1", 0.6)
    batch = Batch(readings, doses)
    store.write(batch)
    settings = FilterSettings(n_particles=256, seed=7, rejuvenate_after=1, rejuvenate_moves=4)
    assimilator = Assimilator(db, store, settings, Timing(reorder_window_s=0.0, batch_window_s=0.01)).start()
    for k in range(len(readings)):  # one reading at a time, as a sensor would send them
        single = Batch(readings[k:k + 1], [d for d in doses if d.given_at <= readings[k].measured_at and d.given_at > (readings[k - 1].measured_at if k else -1)])
        assimilator.submit(single)
        wait_idle(assimilator, timeout=60)
    assimilator.stop()
    assert assimilator.metrics.rejuvenations._value.get() >= 1
    moved = assimilator.posterior("p1")[0]
    plain = reference("p1", readings, doses)
    assert float(moved.state.time[0]) == pytest.approx(float(plain.state.time[0]))
    mean_sd = []
    for posterior in (moved, plain):
        lp = np.asarray(posterior.state.log_params[0], np.float64)
        w = np.exp(np.asarray(posterior.state.log_weights[0], np.float64))
        w /= w.sum()
        mean = w @ lp
        mean_sd.append((mean, np.sqrt(w @ (lp - mean) ** 2), len(np.unique(lp, axis=0))))
    (m_moved, _, _), (m_plain, sd_plain, _) = mean_sd
    assert np.all(np.abs(m_moved - m_plain)[:2] < 0.35 * sd_plain[:2])
    # every particle's amounts are what its (moved) parameters give on the dose history
    from assimilation.simulate import amounts_at, dose_table_of

    table = dose_table_of(moved.model, [Dose((d.given_at - ORIGIN) / 3600, d.amount_mg, None, d.duration_s / 3600) for d in doses])
    t = jnp.asarray([float(moved.state.time[0])], jnp.float32)
    for i in (0, 100, 255):
        x = amounts_at(moved.model, moved.state.log_params[0, i], table, t)[0]
        np.testing.assert_allclose(np.asarray(moved.state.amounts[0, i]), np.asarray(x), rtol=2e-4, atol=1e-3)
    restarted = Assimilator(db, store, settings, Timing()).start()
    restarted.stop()
    assert restarted.metrics.rewinds.labels("recovery")._value.get() == 0
    np.testing.assert_allclose(np.asarray(restarted.posterior("p1")[0].state.log_params), np.asarray(moved.state.log_params))
