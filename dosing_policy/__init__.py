"""Dosing policy: from a posterior to a decision a clinician can act on. Pure numerics.

* :mod:`.sample` — the boundary: :class:`PosteriorSample` (weighted particles at a time).
* :mod:`.regimen` — practical regimens and the search space.
* :mod:`.forecast` — exposure trajectories from the current state (superposition / stepping);
  :mod:`.modal` — the exact modal pulse formulas behind the fast path for linear models.
* :mod:`.metrics`, :mod:`.attainment` — metrics, targets, PTA and toxicity risk.
* :mod:`.recommend` — expected-utility regimen search.
* :mod:`.drugs` — what each drug's search optimises (vancomycin, warfarin, docetaxel).
* :mod:`.next_sample` — when one more level would most reduce uncertainty.
* :mod:`.plausibility` — posterior predictive checks of readings.
* :mod:`.alerts` — the alert state machine.
* :mod:`.provenance` — reproducibility records.
"""

from .alerts import Alert, AlertPolicy, AlertState, AssessmentEvent, ClockEvent, Kind, ReadingEvent, Severity, SourceEvent
from .alerts import initial_state as initial_alert_state
from .alerts import step as alert_step
from .attainment import Attainment, attainment
from .forecast import ExposureForecast, Grid, forecast
from .drugs import POLICIES, DrugPolicy
from .metrics import VANCOMYCIN_AUC24, AreaUnderCurve, Metric, Nadir, Peak, Target, TimeInRange, TimeInRangeBelowCeiling, Trough
from .next_sample import SampleSuggestion, suggest_sample_time
from .plausibility import ReadingCheck, advance, check_patients, check_reading, check_readings
from .provenance import Provenance, data_hash, model_hash, provenance
from .recommend import Evaluation, Recommendation, Utility, assessment_event, evaluate, evaluate_patients, recommend
from .regimen import VANCOMYCIN_SPACE, Regimen, RegimenSpace, candidate_regimens
from .sample import PosteriorSample, from_particles, prior_sample, thinned

__all__ = [
    "Alert", "AlertPolicy", "AlertState", "AreaUnderCurve", "AssessmentEvent", "Attainment", "ClockEvent", "DrugPolicy", "Evaluation",
    "ExposureForecast", "Grid", "Kind", "Metric", "Nadir", "POLICIES", "Peak", "PosteriorSample", "Provenance", "ReadingCheck",
    "ReadingEvent", "Recommendation", "Regimen", "RegimenSpace", "SampleSuggestion", "Severity", "SourceEvent", "Target",
    "TimeInRange", "TimeInRangeBelowCeiling", "Trough", "Utility", "VANCOMYCIN_AUC24", "VANCOMYCIN_SPACE", "advance", "alert_step",
    "assessment_event", "attainment", "candidate_regimens", "check_patients", "check_reading", "check_readings", "data_hash",
    "evaluate", "evaluate_patients", "forecast", "from_particles", "initial_alert_state", "model_hash", "prior_sample",
    "provenance", "recommend", "suggest_sample_time", "thinned",
]
