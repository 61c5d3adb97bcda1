"""The dosing policy as the live service runs it, one alert machine per patient.

After every update the assimilator calls :class:`PolicyEvaluator` with the patient's new
posterior and the work that produced it:

- every new reading is checked against the posterior predictive *before* it (the work's
  start posterior), which feeds the implausible-reading and model-misfit alerts;
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
import importlib
import logging
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.model import BUILTIN_MODELS, Model
from assimilation.online import Posterior, particles
from dosing_policy import (
    VANCOMYCIN_AUC24, VANCOMYCIN_SPACE, AlertPolicy, AlertState, ClockEvent, Grid, Kind, ReadingEvent, Regimen, SourceEvent,
    Target, advance, alert_step, check_reading, from_particles, initial_alert_state, provenance, recommend,
)
from dosing_policy.recommend import assessment_event
from mipdstream.config import Settings
from mipdstream.service.assimilator import Evaluator
from mipdstream.service.state_db import AlertRecord, PatientRecord
from mipdstream.service.timeline import Work

log = logging.getLogger(__name__)

# What each drug's policy optimises. Vancomycin: AUC24 400-600 mg*h/L (Rybak et al., ASHP/IDSA
# consensus, Am J Health Syst Pharm 2020;77:835-864). The neutropenia and warfarin models get
# reading checks and stale-sensor alerts; their dose searches are not wired yet.
DRUG_POLICIES: dict[str, tuple[Target, object]] = {"vancomycin": (VANCOMYCIN_AUC24, VANCOMYCIN_SPACE)}
DEFAULT_INTERVAL_H = 12.0


def model_drug(model_name: str) -> str | None:
    """The ``DRUG`` a built-in model file declares (None for user models without one)."""
    if model_name not in BUILTIN_MODELS:
        return None
    return getattr(importlib.import_module(f"assimilation.models.{model_name}"), "DRUG", None)


def current_regimen(doses: list[Dose], now: float, step: float = Grid().step) -> Regimen | None:
    """The regimen as it would continue: the last dose's amount and duration, repeated at
    the last dosing interval (12 h after a single dose), times rounded to the forecast grid."""
    if not doses:
        return None
    last = doses[-1]
    interval = last.time - doses[-2].time if len(doses) > 1 and last.time > doses[-2].time else DEFAULT_INTERVAL_H
    interval = max(step, round(interval / step) * step)
    next_dose = last.time + interval
    while next_dose < now:
        next_dose += interval
    start = round((next_dose - now) / step) * step
    duration = max(step, round((float(last.duration) or 1.0) / step) * step)
    return Regimen(float(last.amount), float(interval), duration, start=float(start))


@dataclass
class PatientPolicyState:
    alerts: AlertState = field(default_factory=initial_alert_state)
    doses: dict[str, Dose] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    reading_times: dict[str, list[float]] = field(default_factory=dict)  # per source, for its cadence
    watched: set[str] = field(default_factory=set)
    last_assessed: float = float("-inf")
    suggestion: dict | None = None  # the last recommended regimen, structured, with its decision time
    lock: threading.Lock = field(default_factory=threading.Lock)  # the alert machine: two threads step it


class PolicyEvaluator:
    def __init__(self, settings: Settings, assess_every_h: float = 1.0, policy: AlertPolicy = AlertPolicy()):
        self.settings, self.assess_every_h, self.policy = settings, assess_every_h, policy
        self._patients: dict[str, PatientPolicyState] = {}
        self._lock = threading.Lock()
        self._emit: Callable[[list[AlertRecord]], None] | None = None
        self._pending: dict[str, tuple] = {}  # patient id -> its latest assessment request
        self._wake = threading.Condition()
        self._closing = False
        self._busy = False
        self._worker: threading.Thread | None = None
        self._assessment_sinks: list[Callable[[PatientRecord, Posterior, list[Dose]], object]] = []

    def add_assessment_sink(self, sink: Callable[[PatientRecord, Posterior, list[Dose]], object]) -> None:
        """Called with (patient, posterior, doses) after each regimen assessment, on the thread
        that assessed (e.g. to send the next-sample request to the patient's meter)."""
        self._assessment_sinks.append(sink)

    # -- assessments on their own thread ------------------------------------------------------

    def bind(self, emit: Callable[[list[AlertRecord]], None]) -> None:
        """Run regimen assessments on a thread of their own (their alerts go to ``emit``), so
        a regimen search, or its compilation, never holds up assimilation. Requests for the
        same patient coalesce: only the latest posterior is assessed."""
        self._emit = emit
        self._worker = threading.Thread(target=self._assess_forever, name="mipd-policy", daemon=True)
        self._worker.start()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join()

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
        model = load_model(patient.model)
        with self._lock:
            state = self._patients.setdefault(patient.patient_id, PatientPolicyState())
        new_dose = False
        for event in work.events:
            if isinstance(event.event, Dose) and event.key not in state.doses:
                state.doses[event.key] = event.event
                new_dose = True
        doses = sorted(state.doses.values(), key=lambda d: d.time)
        raised = []
        events = [e for e in work.events if isinstance(e.event, Reading) and e.key not in state.checked]
        if events and work.start is not None:
            before = from_particles(particles(work.start.posterior))
            for event in events:
                raised += self._check(model, patient, state, before, doses, event, work)
        now_h = float(posterior.state.time[0])
        drug = model_drug(patient.model)
        if drug in DRUG_POLICIES and (new_dose or now_h - state.last_assessed >= self.assess_every_h):
            state.last_assessed = now_h
            request = (model, patient, state, posterior, doses, now_h, DRUG_POLICIES[drug], work)
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

    def _check(self, model: Model, patient, state, before, doses, event, work) -> list:
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
        try:
            # Only doses still delivering after the sample's time matter (the rest are in its
            # amounts); a short, steady list also keeps the compiled shapes few.
            pending = [d for d in doses if d.time + d.duration > float(before.time) and d.time <= reading.time]
            check = check_reading(model, before, pending, reading.time, reading.analyte, reading.value)
        except Exception:
            log.exception("reading check failed for patient %s", patient.patient_id)
            return alerts
        record = provenance(model, [reading], self.settings.filter_method, {"n_particles": self.settings.filter_particles},
                            self.settings.filter_seed)
        code = model.analytes[model.analyte_index(reading.analyte)].code or str(reading.analyte)
        with state.lock:
            state.alerts, new = alert_step(
                state.alerts, ReadingEvent(reading.time, source, code, reading.value, check.tail_probability, check.pit, record),
                self.policy,
            )
        return alerts + new

    def _assess(self, model, patient, state, posterior, doses, now_h, drug_policy, work) -> list:
        # Decide at the next scheduled dose: the particles are carried forward to it, and every
        # regimen (the current one included) starts there. Besides being the moment a change
        # can take effect, a fixed start keeps the search's compiled shapes fixed.
        target, space = drug_policy
        current = current_regimen(doses, now_h)
        decision = now_h + (current.start if current is not None else 0.0)
        sample = from_particles(particles(posterior))
        record = provenance(model, [e.event for e in work.events], self.settings.filter_method,
                            {"n_particles": self.settings.filter_particles}, self.settings.filter_seed)
        try:
            if decision > now_h:
                sample = advance(model, sample, doses, decision)
            current = current._replace(start=0.0) if current is not None else None
            recommendation = recommend(model, sample, doses, target, space, current, record=record)
        except Exception:
            log.exception("regimen search failed for patient %s", patient.patient_id)
            return []
        regimen = recommendation.regimen
        state.suggestion = {"amount": regimen.amount, "interval": regimen.interval, "duration": regimen.duration,
                            "loading_amount": regimen.loading_amount, "start": 0.0}  # h after the alert time (= decision)
        with state.lock:
            state.alerts, alerts = alert_step(state.alerts, assessment_event(recommendation, decision, target), self.policy)
        for sink in self._assessment_sinks:
            try:
                sink(patient, posterior, doses)
            except Exception:
                log.exception("assessment sink %r failed for patient %s", sink, patient.patient_id)
        return alerts

    @staticmethod
    def _record(patient: PatientRecord, alert, now_s: float, revised: bool = False, suggestion: dict | None = None) -> AlertRecord:
        identity = f"{patient.patient_id}|{alert.kind.value}|{alert.subject}|{alert.status}|{alert.time:.6f}"
        details = {"status": alert.status, "subject": alert.subject, **alert.numbers}
        if alert.kind == Kind.RECOMMENDATION and suggestion is not None:
            details["regimen"] = suggestion  # structured, for accept/reject in the API
        if alert.record is not None:
            details["provenance"] = alert.record._asdict()
        return AlertRecord(
            alert_id=hashlib.blake2b(identity.encode(), digest_size=12).hexdigest(),
            patient_id=patient.patient_id, kind=alert.kind.value, severity=alert.severity.value, raised_at=now_s,
            time_h=float(alert.time), message=alert.reason, details=details, revised=revised,
            status="open" if alert.status == "raised" else "cleared",
        )


def default_evaluator(settings: Settings) -> Evaluator:
    return PolicyEvaluator(settings)
