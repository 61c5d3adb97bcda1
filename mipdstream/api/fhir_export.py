"""A patient's record as a FHIR R4 Bundle (type ``collection``): Patient, the Devices that
measured, Observations (LOINC code when the analyte is a LOINC code, UCUM quantity, device
reference), the model's covariates as Observations (typed as the model declares them: a UCUM
quantity for a continuous one, a coded level for a categorical one; one per value in force,
from the patient's origin and from each later change), MedicationAdministrations, and accepted
recommendations as MedicationRequests (a loading dose as its own dosage instruction)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from assimilation import Continuous, load_model
from ingest.records import StoredDose, StoredReading
from mipdstream.service.state_db import PatientRecord, RecommendationRecord

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL_ANALYTE = "urn:mipdstream:analyte"
LOCAL_ID = "urn:mipdstream:id"
LOCAL_COVARIATE = "urn:mipdstream:covariate"
LOCAL_LEVEL = "urn:mipdstream:covariate-level"
COVARIATE_LOINC = {"WT": ("29463-7", "Body weight"), "AGE": ("30525-0", "Age")}
"""Covariates with a LOINC code of their own; the others are coded by their model name."""
LOINC_CODE = re.compile(r"^\d{1,7}-\d$")
ROUTES = {  # SNOMED CT route of administration
    "iv_bolus": ("47625008", "Intravenous route"), "iv_infusion": ("47625008", "Intravenous route"),
    "oral": ("26643006", "Oral route"), "subcutaneous": ("34206005", "Subcutaneous route"),
    "intramuscular": ("78421000", "Intramuscular route"),
}


def fhir_id(*parts: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) that is stable for the given key."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def instant(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{_uuid(resource['resourceType'], resource['id'])}", "resource": resource}


def _uuid(*parts: str) -> str:
    h = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def _ref(resource_type: str, id_: str) -> str:
    return f"urn:uuid:{_uuid(resource_type, id_)}"


def patient_resource(patient: PatientRecord) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": fhir_id("patient", patient.patient_id),
            "identifier": [{"system": LOCAL_ID, "value": patient.patient_id}]}


def device_resource(device_id: str) -> dict[str, Any]:
    return {"resourceType": "Device", "id": fhir_id("device", device_id),
            "identifier": [{"system": LOCAL_ID, "value": device_id}]}


def observation(patient: PatientRecord, reading: StoredReading) -> dict[str, Any]:
    system = LOINC if LOINC_CODE.match(reading.analyte) else LOCAL_ANALYTE
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": fhir_id("reading", reading.device_id, reading.reading_id),
        "identifier": [{"system": LOCAL_ID, "value": f"{reading.device_id}/{reading.reading_id}"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": system, "code": reading.analyte}], "text": reading.analyte},
        "subject": {"reference": _ref("Patient", fhir_id("patient", patient.patient_id))},
        "effectiveDateTime": instant(reading.measured_at),
        "issued": instant(reading.received_at),
        "valueQuantity": {"value": reading.value, "unit": reading.unit, "system": UCUM, "code": reading.unit},
        "device": {"reference": _ref("Device", fhir_id("device", reading.device_id))},
    }
    if reading.bloq:
        resource["interpretation"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                   "code": "L"}], "text": "below the limit of quantification"}]
    return resource


def covariate_observation(patient: PatientRecord, declared, name: str, value, at_s: float) -> dict[str, Any]:
    coding = [{"system": LOCAL_COVARIATE, "code": name}]
    if name in COVARIATE_LOINC:
        code, display = COVARIATE_LOINC[name]
        coding.insert(0, {"system": LOINC, "code": code, "display": display})
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": fhir_id("covariate", patient.patient_id, name, repr(at_s)),
        "status": "final", "code": {"coding": coding, "text": getattr(declared, "description", "") or name},
        "subject": {"reference": _ref("Patient", fhir_id("patient", patient.patient_id))},
        "effectiveDateTime": instant(at_s),
    }
    if isinstance(declared, Continuous) or (declared is None and isinstance(value, (int, float))):
        unit = declared.unit if declared is not None else "1"
        resource["valueQuantity"] = {"value": float(value), "unit": unit, "system": UCUM, "code": unit}
    else:
        resource["valueCodeableConcept"] = {"coding": [{"system": f"{LOCAL_LEVEL}:{name}", "code": str(value)}], "text": str(value)}
    return resource


def covariate_observations(patient: PatientRecord) -> list[dict[str, Any]]:
    model = load_model(patient.model)
    declared = {c.name: c for c in model.covariates}
    out = [covariate_observation(patient, declared.get(k), k, v, patient.origin_s) for k, v in patient.covariates.items()]
    for change in patient.covariate_changes:
        out += [covariate_observation(patient, declared.get(k), k, v, change.at_s) for k, v in change.values.items()]
    return out


def medication_administration(patient: PatientRecord, dose: StoredDose) -> dict[str, Any]:
    code, display = ROUTES.get(dose.route, (None, dose.route))
    route: dict[str, Any] = {"text": display}
    if code:
        route["coding"] = [{"system": "http://snomed.info/sct", "code": code, "display": display}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration", "id": fhir_id("dose", dose.device_id, dose.dose_id),
        "identifier": [{"system": LOCAL_ID, "value": f"{dose.device_id}/{dose.dose_id}"}],
        "status": "completed" if dose.status == "administered" else "not-done",
        "medicationCodeableConcept": {"text": dose.drug},
        "subject": {"reference": _ref("Patient", fhir_id("patient", patient.patient_id))},
        "dosage": {"route": route, "dose": {"value": dose.amount_mg, "unit": "mg", "system": UCUM, "code": "mg"}},
    }
    if dose.duration_s:
        resource["effectivePeriod"] = {"start": instant(dose.given_at), "end": instant(dose.given_at + dose.duration_s)}
    else:
        resource["effectiveDateTime"] = instant(dose.given_at)
    if not dose.device_id.startswith("clinician:"):
        resource["device"] = [{"reference": _ref("Device", fhir_id("device", dose.device_id))}]
    else:
        resource["performer"] = [{"actor": {"display": dose.device_id.removeprefix("clinician:")}}]
    return resource


def _dose_quantity(mg: float) -> list[dict[str, Any]]:
    return [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}]


def medication_request(patient: PatientRecord, rec: RecommendationRecord, drug: str) -> dict[str, Any]:
    loading = rec.loading_amount_mg > 0
    maintenance_start = rec.start_s + (3600 * rec.interval_h if loading else 0.0)
    dosage: dict[str, Any] = {
        "text": f"{rec.amount_mg:g} mg every {rec.interval_h:g} h" + (f" over {rec.duration_h:g} h" if rec.duration_h else ""),
        "timing": {"repeat": {"boundsPeriod": {"start": instant(maintenance_start)}, "frequency": 1, "period": rec.interval_h,
                              "periodUnit": "h"}},
        "doseAndRate": _dose_quantity(rec.amount_mg),
    }
    if rec.duration_h:
        dosage["timing"]["repeat"]["duration"] = rec.duration_h
        dosage["timing"]["repeat"]["durationUnit"] = "h"
    dosages = [dosage]
    if loading:
        load_h = rec.loading_duration_h or rec.duration_h
        first: dict[str, Any] = {"sequence": 1, "text": f"loading dose {rec.loading_amount_mg:g} mg" + (f" over {load_h:g} h" if load_h else ""),
                                 "timing": {"event": [instant(rec.start_s)], "repeat": {"count": 1}},
                                 "doseAndRate": _dose_quantity(rec.loading_amount_mg)}
        if load_h:
            first["timing"]["repeat"].update(duration=load_h, durationUnit="h")
        dosages = [first, {"sequence": 2, **dosage}]
    return {
        "resourceType": "MedicationRequest", "id": fhir_id("recommendation", rec.recommendation_id),
        "identifier": [{"system": LOCAL_ID, "value": rec.recommendation_id},
                       {"system": "urn:mipdstream:recommendation-sha256", "value": rec.hash}],
        "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": drug},
        "subject": {"reference": _ref("Patient", fhir_id("patient", patient.patient_id))},
        "authoredOn": instant(rec.decided_at or rec.created_at),
        "requester": {"display": rec.decided_by or "unknown"},
        "reasonCode": [{"text": rec.rationale or "model-informed precision dosing recommendation"}],
        "note": [{"text": f"Accepted: {rec.reason}"}] if rec.reason else [],
        "dosageInstruction": dosages,
    }


def bundle(patient: PatientRecord, readings: list[StoredReading], doses: list[StoredDose],
           accepted: list[RecommendationRecord], generated_at: float) -> dict[str, Any]:
    drug = next((d.drug for d in doses), "unspecified")
    devices = sorted({r.device_id for r in readings} | {d.device_id for d in doses if not d.device_id.startswith("clinician:")})
    resources = [patient_resource(patient)] + [device_resource(d) for d in devices]
    resources += [observation(patient, r) for r in readings]
    resources += covariate_observations(patient)
    resources += [medication_administration(patient, d) for d in doses]
    resources += [medication_request(patient, r, drug) for r in accepted]
    for resource in resources:
        if not resource.get("note", True):
            resource.pop("note")
    return {"resourceType": "Bundle", "id": fhir_id("bundle", patient.patient_id, str(generated_at)), "type": "collection",
            "timestamp": instant(generated_at), "entry": [_entry(r) for r in resources]}
