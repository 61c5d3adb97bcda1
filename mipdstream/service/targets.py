"""Every monitored patient's target: the drug's cited default unless the team set another.

A model file names its drug (``DRUG``); the drug's :class:`dosing_policy.drugs.DrugPolicy`
carries the default as a clinician reads it (:class:`~dosing_policy.drugs.ClinicalTarget`,
e.g. AUC24 400-600 mg.h/L, INR 2-3, ANC nadir 0.5-1.5 x 10^9/L, each with its source). A
team's own range (``PUT /patients/{id}/target``) is a range of the same quantity in the same
unit, and the dosing policy searches for it (:meth:`DrugPolicy.target_for`).

A model without a drug policy (a user's model) has no default; a team-set target there is a
range of the model's first analyte, as before.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from assimilation.model import BUILTIN_MODELS
from dosing_policy.drugs import POLICIES, ClinicalTarget, DrugPolicy
from dosing_policy.metrics import Target
from mipdstream.service.state_db import PatientRecord, ServiceDB, TargetRecord

__all__ = ["PatientTarget", "drug_of", "drug_policy", "patient_target", "resolver"]


class PatientTarget(NamedTuple):
    clinical: ClinicalTarget
    source: str  # "default" (the drug's, cited) or "team"
    policy: DrugPolicy | None  # None: a user model without a dosing policy (a level range of its first analyte)

    @property
    def search_target(self) -> Target | None:
        if self.policy is None:
            return None
        if self.source == "default":
            return self.policy.target
        return self.policy.target_for(self.clinical.low, self.clinical.high)


def drug_of(model_spec: str) -> str | None:
    """The ``DRUG`` a built-in model file declares (None for user models without one)."""
    name = model_spec.rsplit("/", 1)[-1].removesuffix(".py")
    if name not in BUILTIN_MODELS:
        return None
    return getattr(importlib.import_module(f"assimilation.models.{name}"), "DRUG", None)


def drug_policy(model_spec: str) -> DrugPolicy | None:
    return POLICIES.get(drug_of(model_spec) or "")


def patient_target(stored: TargetRecord | None, model_spec: str) -> PatientTarget | None:
    """The patient's target from the team's record (if any) and the model's drug policy."""
    policy = drug_policy(model_spec)
    default = policy.clinical if policy is not None else None
    if stored is not None:
        quantity = default.quantity if default is not None else "level"
        source = default.source if default is not None else "set by the care team"
        return PatientTarget(ClinicalTarget(quantity, stored.low, stored.high, stored.unit, source), "team", policy)
    if default is None:
        return None
    return PatientTarget(default, "default", policy)


def resolver(db: ServiceDB):
    """``target_of`` for :class:`mipdstream.service.policy.PolicyEvaluator`: the search target
    of each patient, read from the service DB at each assessment."""

    def target_of(patient: PatientRecord, policy: DrugPolicy) -> tuple[Target, str]:
        stored = db.target(patient.patient_id)
        if stored is None or policy.clinical is None:
            return policy.target, "default"
        return policy.target_for(stored.low, stored.high), "team"

    return target_of
