"""FHIR R4 export of a patient's record."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from mipdstream.api.auth import DB, Live, ReadablePatient
from mipdstream.api.fhir_export import bundle
from mipdstream.api.problems import problem_responses

router = APIRouter(prefix="/api/v1", tags=["fhir"], responses=problem_responses(401, 403, 404, 422))


@router.get("/patients/{patient_id}/fhir", response_model=dict[str, Any],
            summary="FHIR R4 Bundle: Observations, MedicationAdministrations, accepted recommendations (MedicationRequest)")
def export(patient: ReadablePatient, live: Live, db: DB) -> dict[str, Any]:
    store = live.ingest.store
    return bundle(patient, store.readings(patient.patient_id), store.doses(patient.patient_id),
                  db.recommendations(patient.patient_id, status="accepted"), time.time())
