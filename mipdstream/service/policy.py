"""The dosing policy as the live service runs it, one alert machine per patient.

After every update the assimilator calls :class:`PolicyEvaluator` with the patient's new
posterior and the work that produced it:

- every new reading is checked against the posterior predictive *before* it (the work's
  start posterior), which feeds the implausible-reading and model-misfit alerts; the
  assimilator hands over each batched update at once (``evaluate_batch``), and the new
  readings of all its patients are checked together (a few vmapped calls);
- at most every ``assess_every_h`` model hours (and after every dose) the current regimen,
  inferred from the doses given, is assessed and the best practical regimen searched
  (``dosing_policy.recommend``), which feeds the exposure, toxicity and recommendation
  alerts;
- devices that read at a steady cadence are watched for silence (stale sensor), on the
  patient's clock and on the wall clock (``tick``).

Alerts become :class:`AlertRecord` rows with the numbers, the plain-language reason and
the reproducibility record (model hash, data hash, filter settings, seed). Alerts raised
by a re-assimilation after a late event are marked ``revised``.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.model import Model
from assimilation.online import Posterior, particles
from dosing_policy import (
    AlertPolicy, AlertState, ClockEvent, Grid, Kind, PosteriorSample, ReadingCheck, ReadingEvent, Regimen, SourceEvent, advance,
    alert_step, from_particles, initial_alert_state, provenance, recommend,
)
from dosing_policy.drugs import POLICIES, DrugPolicy
from dosing_policy.metrics import Target, describe_pta
from dosing_policy.plausibility import check_patients
from dosing_policy.recommend import Recommendation, assessment_event
from dosing_policy.sample import for_new_occasion, thinned
from mipdstream.config import Settings
from mipdstream.service import regimens, targets
from mipdstream.service.assimilator import Evaluator
from mipdstream.service.state_db import AlertRecord, AssessmentRecord, PatientRecord
from mipdstream.service.timeline import Work

log = logging.getLogger(__name__)

# What each drug's dose search optimises (targets, regimens and their sources: dosing_policy/drugs.py).
DRUG_POLICIES: dict[str, DrugPolicy] = POLICIES
DEFAULT_INTERVAL_H = 12.0


def current_regimen(doses: list[Dose], now: float, step: float = Grid().step, bolus: bool = False,
                    usual_interval: float = DEFAULT_INTERVAL_H, fixed_interval: bool = False) -> Regimen | None:
    """The regimen as it would continue: the last dose's amount and duration, repeated at
    the last dosing interval (``usual_interval`` after a single dose), times rounded to the
    forecast grid and the duration to the half hour (or the grid step if finer).
    ``bolus``: the drug is given at once (oral), so a dose without a duration stays one;
    otherwise a missing duration is read as a 1 h infusion. ``fixed_interval``: the drug has one
    interval (warfarin once a day, docetaxel every 21 days), so late or early doses do not change it."""
    if not doses:
        return None
    last = doses[-1]
    interval = last.time - doses[-2].time if len(doses) > 1 and last.time > doses[-2].time and not fixed_interval else usual_interval
    interval = max(step, round(interval / step) * step)
    next_dose = last.time + interval
    while next_dose < now:
        next_dose += interval
    start = round((next_dose - now) / step) * step
    if bolus and float(last.duration) <= 0:
        duration = 0.0
    else:
        unit = min(step, 0.5)  # durations need not lie on the grid; a 1 h infusion stays 1 h on a 6 h grid
        duration = max(unit, round((float(last.duration) or 1.0) / unit) * unit)
    return Regimen(float(last.amount), float(interval), duration, start=float(start))


def check_request(before: Posterior, doses: list[Dose], readings: list[Reading]) -> tuple[PosteriorSample, list[Dose], list[Reading]]:
    """What :func:`check_patients` needs to check ``readings`` against the posterior ``before``
    them: its particles (host arrays: the batch is stacked on the host), the doses that act
    after its time up to the last reading (the rest are in its amounts, and a short, steady list
    keeps the compiled shapes few), and the readings."""
    p = particles(before)
    sample = PosteriorSample(*(np.asarray(a, np.float32) for a in (p.log_params, p.amounts, p.log_weights, p.time)))
    last = max(r.time for r in readings)
    acting = [d for d in doses if d.time + d.duration > float(sample.time) and d.time <= last]
    later = [d.time for d in acting if d.time > float(sample.time)]
    if before.model.occasions is not None and later:
        # a dose among the readings may open an occasion whose κ the posterior has not seen: the
        # readings are checked against fresh κ (all of this batch's readings: an approximation
        # for those before that dose)
        earlier = [d for d in doses if d.time <= float(sample.time)]
        renewed = for_new_occasion(before.model, sample, earlier, min(later) - float(sample.time))
        sample = renewed._replace(log_params=np.asarray(renewed.log_params, np.float32))
    return sample, acting, list(readings)


@dataclass
class PatientPolicyState:
    alerts: AlertState = field(default_factory=initial_alert_state)
    doses: dict[str, Dose] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    reading_times: dict[str, list[float]] = field(default_factory=dict)  # per source, for its cadence
    watched: set[str] = field(default_factory=set)
    last_assessed: float = float("-inf")
    suggestion: Regimen | None = None  # the last recommended regimen, relative to its decision time (the alert's)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the alert machine: two threads step it


MAX_DEFER_S = 2.0  # longest an assessment waits for assimilation to pause, s
DEFER_POLL_S = 0.02


TargetOf = Callable[[PatientRecord, DrugPolicy], tuple[Target, str]]
"""(patient, drug policy) -> (the search target for this patient, "default" or "team")."""


def default_target(patient: PatientRecord, drug_policy: DrugPolicy) -> tuple[Target, str]:
    return drug_policy.target, "default"


class PolicyEvaluator:
    def __init__(self, settings: Settings, assess_every_h: float = 1.0, policy: AlertPolicy = AlertPolicy(),
                 target_of: TargetOf = default_target):
        self.settings, self.assess_every_h, self.policy = settings, assess_every_h, policy
        self.target_of = target_of
        self._record_sinks: list[Callable[[AssessmentRecord], object]] = []
        self._patients: dict[str, PatientPolicyState] = {}
        self._lock = threading.Lock()
        self._emit: Callable[[list[AlertRecord]], None] | None = None
        self._pending: dict[str, tuple] = {}  # patient id -> its latest assessment request
        self._wake = threading.Condition()
        self._closing = False
        self._busy = False
        self._worker: threading.Thread | None = None
        self._assessment_sinks: list[Callable[[PatientRecord, Posterior, list[Dose]], object]] = []
        self._assimilation_busy: Callable[[], bool] | None = None
        self._deferring_since: float | None = None

    def add_assessment_record_sink(self, sink: Callable[[AssessmentRecord], object]) -> None:
        """Called with each assessment's :class:`AssessmentRecord` (e.g. to store it for triage)."""
        self._record_sinks.append(sink)

    def add_assessment_sink(self, sink: Callable[[PatientRecord, Posterior, list[Dose]], object]) -> None:
        """Called with (patient, posterior, doses) after each regimen assessment, on the thread
        that assessed (e.g. to send the next-sample request to the patient's meter)."""
        self._assessment_sinks.append(sink)

    # -- assessments on their own thread ------------------------------------------------------

    def bind(self, emit: Callable[[list[AlertRecord]], None], busy: Callable[[], bool] | None = None) -> None:
        """Run regimen assessments on a thread of their own (their alerts go to ``emit``), so
        a regimen search, or its compilation, never holds up assimilation. Requests for the
        same patient coalesce: only the latest posterior is assessed.

        ``busy()``: whether assimilation has work in hand. Assessments then wait (at most
        ``MAX_DEFER_S`` for the oldest request), so that on two cores the searches of many
        patients at once (10,000 first assessments after a start) do not take the CPU from the
        reading-to-alert path; they run in the gaps between updates."""
        self._emit = emit
        self._assimilation_busy = busy
        self._worker = threading.Thread(target=self._assess_forever, name="mipd-policy", daemon=True)
        self._worker.start()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join()

    def _defer(self) -> bool:
        """Whether to leave the CPU to assimilation a little longer (see :meth:`bind`)."""
        busy = self._assimilation_busy
        if busy is None or not busy():
            self._deferring_since = None
            return False
        now = time.monotonic()
        if self._deferring_since is None:
            self._deferring_since = now
        if now - self._deferring_since >= MAX_DEFER_S:
            self._deferring_since = None  # one assessment now, then defer again
            return False
        return True

    def idle(self) -> bool:
        with self._wake:
            return not self._pending and not self._busy

    def _assess_forever(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                if self._defer():
                    self._wake.wait(DEFER_POLL_S)
                    continue
                _, request = self._pending.popitem()
                self._busy = True
            try:
                patient, state, now_s, revised = request[1], request[2], request[-2], request[-1]
                alerts = self._assess(*request[:-2])
                self._emit([self._record(patient, a, now_s, revised=revised, suggestion=state.suggestion) for a in alerts])
            except Exception:
                log.exception("policy assessment failed")
            finally:
                with self._wake:
                    self._busy = False

    # -- the Evaluator protocol -----------------------------------------------------------

    def __call__(self, patient: PatientRecord, posterior: Posterior, work: Work, now_s: float) -> list[AlertRecord]:
        return self.evaluate_batch([(patient, posterior, work)], now_s)

    def evaluate_batch(self, updates: Sequence[tuple[PatientRecord, Posterior, Work]], now_s: float) -> list[AlertRecord]:
        """The alerts after one assimilation batch (patient, new posterior, the work behind it).

        Every patient's new readings are checked against its work's start posterior in one
        batched check per model (:func:`check_patients`: checked one call per reading,
        the dispatches and host syncs took ~60 % of the assimilation thread at 10,000 patients),
        then each patient's alert machine steps through its readings in time order, as before.
        A patient whose evaluation fails is logged and skipped; the others go on.
        """
        pending = [self._admit(patient, work) for patient, _, work in updates]
        checks = self._check_all(updates, pending)
        out: list[AlertRecord] = []
        for (patient, posterior, work), (state, doses, readings, new_dose), results in zip(updates, pending, checks):
            try:
                out += self._evaluate(patient, posterior, work, now_s, state, doses, readings, results, new_dose)
            except Exception:
                log.exception("policy evaluation failed for patient %s", patient.patient_id)
        return out

    def _admit(self, patient: PatientRecord, work: Work) -> tuple[PatientPolicyState, list[Dose], list, bool]:
        """The patient's state with the work's new doses recorded; its doses in time order, the
        work's readings not checked before, and whether a dose was new."""
        with self._lock:
            state = self._patients.setdefault(patient.patient_id, PatientPolicyState())
        new_dose = False
        for event in work.events:
            if isinstance(event.event, Dose) and event.key not in state.doses:
                state.doses[event.key] = event.event
                new_dose = True
        doses = sorted(state.doses.values(), key=lambda d: d.time)
        readings = [e for e in work.events if isinstance(e.event, Reading) and e.key not in state.checked]
        return state, doses, readings, new_dose

    def _check_all(self, updates, pending) -> list[list[ReadingCheck | None]]:
        """Each patient's new readings checked against its work's start posterior, one call per
        model; None for a reading whose check failed."""
        results: list[list[ReadingCheck | None]] = [[None] * len(readings) for _, _, readings, _ in pending]
        groups: dict[str, list[tuple[int, tuple]]] = defaultdict(list)
        for i, ((patient, _, work), (_, doses, readings, _)) in enumerate(zip(updates, pending)):
            if not readings or work.start is None:
                continue
            try:
                groups[patient.model].append((i, check_request(work.start.posterior, doses, [e.event for e in readings])))
            except Exception:
                log.exception("reading check failed for patient %s", patient.patient_id)
        for model_name, members in groups.items():
            model = load_model(model_name)
            try:
                checked = check_patients(model, *zip(*(request for _, request in members)))
            except Exception:
                # One patient's bad data must not cost the others their checks.
                log.exception("batched reading checks of %d %s patients failed; checking one by one", len(members), model_name)
                checked = [self._check_alone(model, updates[i][0], request) for i, request in members]
            for (i, _), patient_checks in zip(members, checked):
                results[i] = patient_checks
        return results

    @staticmethod
    def _check_alone(model: Model, patient: PatientRecord, request: tuple) -> list[ReadingCheck | None]:
        try:
            return check_patients(model, *([part] for part in request))[0]
        except Exception:
            log.exception("reading check failed for patient %s", patient.patient_id)
            return [None] * len(request[2])

    def _evaluate(self, patient, posterior, work, now_s, state, doses, readings, checks, new_dose) -> list[AlertRecord]:
        """One patient's alerts: its readings' (already computed) checks, then the assessment."""
        model = load_model(patient.model)
        raised = []
        if readings and work.start is not None:
            for event, check in zip(readings, checks):
                raised += self._check(model, state, event, check)
        now_h = float(posterior.state.time[0])
        drug_policy = targets.drug_policy(patient.model)
        if drug_policy is not None and (new_dose or now_h - state.last_assessed >= self.assess_every_h):
            state.last_assessed = now_h
            request = (model, patient, state, posterior, doses, now_h, drug_policy, work)
            if self._emit is None:
                raised += self._assess(*request)
            else:
                with self._wake:
                    self._pending[patient.patient_id] = (*request, now_s, work.kind != "append")
                    self._wake.notify()
        return [self._record(patient, alert, now_s, revised=work.kind != "append", suggestion=state.suggestion)
                for alert in raised]

    def tick(self, patients: list[PatientRecord], now_s: float) -> list[AlertRecord]:
        """The wall clock: a sensor that went silent raises its stale alert even without new data."""
        out = []
        for patient in patients:
            with self._lock:
                state = self._patients.get(patient.patient_id)
            if state is None or not state.watched:
                continue
            with state.lock:
                state.alerts, alerts = alert_step(state.alerts, ClockEvent(patient.hours(now_s)), self.policy)
            out += [self._record(patient, a, now_s) for a in alerts]
        return out

    # -- pieces -----------------------------------------------------------------------------

    def _check(self, model: Model, state: PatientPolicyState, event, check: ReadingCheck | None) -> list:
        """One reading through the alert machine: its source's cadence, then its check (none
        when the check failed: the reading still counts for the cadence)."""
        reading: Reading = event.event
        source = event.key.split(":")[1]
        state.checked.add(event.key)
        alerts = []
        times = state.reading_times.setdefault(source, [])
        times.append(reading.time)
        if source not in state.watched and len(times) >= 4:
            cadence = statistics.median(b - a for a, b in zip(times[-4:], times[-3:]))
            if cadence > 0:
                state.watched.add(source)
                with state.lock:
                    state.alerts, new = alert_step(state.alerts, SourceEvent(reading.time, source, cadence), self.policy)
                alerts += new
        if check is None:
            return alerts
        analyte = model.analytes[model.analyte_index(reading.analyte)]
        code = analyte.code or str(reading.analyte)
        event = ReadingEvent(reading.time, source, code, reading.value, check.tail_probability, check.pit,
                             persistence=analyte.persistence_h)
        with state.lock:
            state.alerts, new = alert_step(state.alerts, event, self.policy)
        if new:
            # The record goes only on the alerts the reading raised or cleared, so it is hashed
            # only for those (hashing every reading takes up to 10 % of the thread in a flood).
            record = provenance(model, [reading], self.settings.filter_method,
                                {"n_particles": self.settings.filter_particles}, self.settings.filter_seed)
            new = [alert._replace(record=record) for alert in new]
        return alerts + new

    def _assess(self, model, patient, state, posterior, doses, now_h, drug_policy, work) -> list:
        # Decide at the next scheduled dose: the particles are carried forward to it, and every
        # regimen (the current one included) starts there. Besides being the moment a change
        # can take effect, a fixed start keeps the search's compiled shapes fixed.
        target, target_source = self.target_of(patient, drug_policy)
        space, utility, grid = drug_policy.space, drug_policy.utility, drug_policy.grid
        current = current_regimen(doses, now_h, grid.step, drug_policy.bolus, drug_policy.usual_interval,
                                  len(space.intervals) == 1)
        decision = now_h + (current.start if current is not None else 0.0)
        sample = from_particles(particles(posterior))
        if drug_policy.search_particles is not None:
            sample = thinned(sample, drug_policy.search_particles)
        record = provenance(model, [e.event for e in work.events], self.settings.filter_method,
                            {"n_particles": self.settings.filter_particles}, self.settings.filter_seed)
        try:
            if decision > now_h:
                sample = advance(model, sample, doses, decision)
            current = current._replace(start=0.0) if current is not None else None
            recommendation = recommend(model, sample, doses, target, space, current, utility, grid, record=record)
        except Exception:
            log.exception("regimen search failed for patient %s", patient.patient_id)
            return []
        state.suggestion = recommendation.regimen._replace(start=0.0)  # h after the alert time (= decision)
        assessed = assessment_record(patient, recommendation, now_h, decision, target, drug_policy, target_source)
        for sink in self._record_sinks:
            try:
                sink(assessed)
            except Exception:
                log.exception("assessment record sink %r failed for patient %s", sink, patient.patient_id)
        event = assessment_event(recommendation, decision, target, lead_h=decision - now_h)
        with state.lock:
            state.alerts, alerts = alert_step(state.alerts, event, self.policy)
        for sink in self._assessment_sinks:
            try:
                sink(patient, posterior, doses)
            except Exception:
                log.exception("assessment sink %r failed for patient %s", sink, patient.patient_id)
        return alerts

    @staticmethod
    def _record(patient: PatientRecord, alert, now_s: float, revised: bool = False, suggestion: Regimen | None = None) -> AlertRecord:
        identity = f"{patient.patient_id}|{alert.kind.value}|{alert.subject}|{alert.status}|{alert.time:.6f}"
        details = {"status": alert.status, "subject": alert.subject, **alert.numbers}
        if alert.kind == Kind.RECOMMENDATION and suggestion is not None:
            details["regimen"] = regimens.to_details(suggestion)  # typed again by regimens.from_details
        if alert.record is not None:
            details["provenance"] = alert.record._asdict()
        return AlertRecord(
            alert_id=hashlib.blake2b(identity.encode(), digest_size=12).hexdigest(),
            patient_id=patient.patient_id, kind=alert.kind.value, severity=alert.severity.value, raised_at=now_s,
            time_h=float(alert.time), message=alert.reason, details=details, revised=revised,
            status="open" if alert.status == "raised" else "cleared",
        )


def assessment_record(patient: PatientRecord, rec: Recommendation, now_h: float, decision_h: float, target: Target,
                      drug_policy: DrugPolicy, target_source: str) -> AssessmentRecord:
    """The assessment as the service stores it (:class:`AssessmentRecord`); without a current
    regimen (nothing given yet) the current numbers are empty."""
    clinical = drug_policy.clinical
    low, high = (target.low, target.high) if not hasattr(target.metric, "ceiling") else (target.metric.low, target.metric.high)
    has = rec.current is not None
    return AssessmentRecord(
        patient.patient_id, time.time(), float(now_h), float(decision_h),
        clinical.quantity if clinical else target.metric.name, float(low), float(high), clinical.unit if clinical else target.metric.unit,
        target_source, describe_pta(target), tuple(float(w) for w in rec.evaluation.windows), float(target.metric.window),
        regimens.to_details(rec.current) if has else None,
        rec.current_pta if has else (), rec.current_risk if has else (), rec.current_median if has else (),
        regimens.to_details(rec.regimen), rec.pta, rec.risk, rec.median, target.metric.unit,
    )


def default_evaluator(settings: Settings) -> Evaluator:
    return PolicyEvaluator(settings)
