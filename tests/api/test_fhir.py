"""FHIR R4 export, validated with the fhir.resources models: R4 (4.0.1) in the separate
environment `make test` builds (fhir.resources 6.4 needs pydantic 1), and R4B (4.3) in-process."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.servers import services_required

R4_VALIDATOR = """
import json, sys
import fhir.resources
from fhir.resources.bundle import Bundle
assert fhir.resources.__fhir_version__ == "4.0.1", fhir.resources.__fhir_version__
bundle = Bundle.parse_file(sys.argv[1])
print(json.dumps({"version": fhir.resources.__fhir_version__,
                  "types": sorted(e.resource.resource_type for e in bundle.entry)}))
"""


def r4_python() -> str:
    """The FHIR R4 validator's interpreter: $MIPD_FHIR_R4_PYTHON, else the Makefile's default venv."""
    path = os.environ.get("MIPD_FHIR_R4_PYTHON") or str(Path(__file__).resolve().parents[2] / ".venv-fhir-r4/bin/python")
    if not Path(path).exists():
        message = f"FHIR R4 validator environment missing ({path}); `make test` builds it"
        if services_required():
            pytest.fail(f"MIPD_REQUIRE_SERVICES=1 but {message}")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def exported(api):
    """(export response, accepted recommendation, open recommendation) of a patient with two
    device readings, a pump dose, a clinician dose and two recommendations."""
    patient_id, origin = api.serum_patient()
    device_id = api.device_for(patient_id, origin)
    api.publish_dose(device_id, origin)
    api.publish_readings(device_id, [(origin + 7200, 19.5), (origin + 14400, 14.25)])
    assert api.assimilated(patient_id, 4.0)
    rec = api.recommendation(patient_id, 1750, 12)
    with api.as_("clin-a") as clinician:
        clinician.post(f"/api/v1/patients/{patient_id}/doses", json={"amount_mg": 500, "given_at": origin + 5 * 3600,
                       "drug": "vancomycin", "route": "iv_bolus"}).raise_for_status()
        clinician.post(f"/api/v1/recommendations/{rec.recommendation_id}/decision",
                       json={"decision": "accept", "reason": "PTA 0.82"}).raise_for_status()
        open_rec = api.recommendation(patient_id, 3000, 24)  # not accepted: not exported
        response = clinician.get(f"/api/v1/patients/{patient_id}/fhir")
    assert response.status_code == 200
    return response, rec, open_rec


def test_export_validates_against_fhir_r4(exported, tmp_path):
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(exported[0].text)
    result = subprocess.run([r4_python(), "-c", R4_VALIDATOR, str(bundle_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]  # a ValidationError names the invalid element
    checked = json.loads(result.stdout)
    assert checked["version"] == "4.0.1"
    assert checked["types"].count("Observation") == 2 + 2 and checked["types"].count("MedicationAdministration") == 2  # readings + covariates
    assert checked["types"].count("MedicationRequest") == 1


def test_r4_validator_rejects_an_invalid_resource(exported, tmp_path):
    """The R4 check can fail: an Observation without its required status is refused."""
    document = exported[0].json()
    observation = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Observation")
    del observation["status"]
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(document))
    result = subprocess.run([r4_python(), "-c", R4_VALIDATOR, str(bundle_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "status" in result.stderr


def test_export_validates_and_carries_codes_units_devices_and_accepted_orders(exported):
    exported, rec, open_rec = exported
    bundle = Bundle.model_validate(exported.json())  # raises on any invalid resource
    assert bundle.type == "collection"
    resources = [entry.resource for entry in bundle.entry]
    by_type = {}
    for resource in resources:
        by_type.setdefault(resource.__resource_type__, []).append(resource)
    observations = [o for o in by_type["Observation"] if o.device is not None]
    covariates = {o.code.coding[-1].code: o for o in by_type["Observation"] if o.device is None}
    assert sorted(o.valueQuantity.value for o in observations) == [14.25, 19.5]
    weight, crcl = covariates["WT"], covariates["CRCL"]  # the fixture's patient: WT 70 kg, CRCL 100 mL/min
    assert weight.code.coding[0].code == "29463-7" and (weight.valueQuantity.value, weight.valueQuantity.code) == (70.0, "kg")
    assert (crcl.valueQuantity.value, crcl.valueQuantity.code) == (100.0, "mL/min") and set(covariates) == {"WT", "CRCL"}
    for o in observations:
        assert o.code.coding[0].system == "http://loinc.org" and o.code.coding[0].code == "20578-1"
        assert o.valueQuantity.system == "http://unitsofmeasure.org" and o.valueQuantity.code == "mg/L"
    device_urls = {e.fullUrl for e in bundle.entry if e.resource.__resource_type__ == "Device"}
    assert {o.device.reference for o in observations} <= device_urls and len(device_urls) == 1
    patient_url = next(e.fullUrl for e in bundle.entry if e.resource.__resource_type__ == "Patient")
    assert all(o.subject.reference == patient_url for o in observations)
    administrations = by_type["MedicationAdministration"]
    assert sorted(float(a.dosage.dose.value) for a in administrations) == [500.0, 1000.0]
    assert {a.dosage.dose.code for a in administrations} == {"mg"}
    [order] = by_type["MedicationRequest"]
    assert order.intent == "order" and order.status == "active"
    assert float(order.dosageInstruction[0].doseAndRate[0].doseQuantity.value) == 1750.0
    assert any(i.value == rec.hash for i in order.identifier)
    assert open_rec.recommendation_id not in exported.text
    assert abs(bundle.timestamp.timestamp() - time.time()) < 60


def test_categorical_covariates_and_a_loading_dose_are_exported_as_declared():
    """A warfarin patient's genotypes as coded levels, age as a quantity; a vancomycin order
    with a loading dose as two dosage instructions (pure: no service needed)."""
    from mipdstream.api.fhir_export import bundle
    from mipdstream.service.state_db import CovariateChangeRecord, PatientRecord, RecommendationRecord

    origin = 1.8e9
    warfarin = PatientRecord("w1", "warfarin_hamberg", {"CYP2C9": "*1/*3", "VKORC1": "G/A", "AGE": 67.0}, origin, "t",
                             (CovariateChangeRecord(origin + 86400, {"AGE": 68.0}),))
    exported = Bundle.model_validate(bundle(warfarin, [], [], [], origin + 2 * 86400))
    observations = [e.resource for e in exported.entry if e.resource.__resource_type__ == "Observation"]
    values = {(o.code.coding[-1].code, o.effectiveDateTime.timestamp()): o for o in observations}
    assert values[("CYP2C9", origin)].valueCodeableConcept.coding[0].code == "*1/*3"
    assert values[("VKORC1", origin)].valueCodeableConcept.text == "G/A"
    assert values[("AGE", origin)].valueQuantity.value == 67.0 and values[("AGE", origin + 86400)].valueQuantity.value == 68.0
    assert values[("AGE", origin)].valueQuantity.code == "a" and len(observations) == 4

    vanco = PatientRecord("v1", "vancomycin", {"CRCL": 80.0, "WT": 90.0, "DIAL": 0}, origin)
    order = RecommendationRecord("r1", "v1", origin, 1250.0, 12.0, 2.5, origin + 3600, "load, then maintain", "h" * 64,
                                 status="accepted", decided_by="clin", decided_at=origin, loading_amount_mg=2500.0, loading_duration_h=4.5)
    exported = Bundle.model_validate(bundle(vanco, [], [], [order], origin))
    [request] = [e.resource for e in exported.entry if e.resource.__resource_type__ == "MedicationRequest"]
    first, then = request.dosageInstruction
    assert first.sequence == 1 and float(first.doseAndRate[0].doseQuantity.value) == 2500.0 and first.timing.repeat.count == 1
    assert then.sequence == 2 and float(then.doseAndRate[0].doseQuantity.value) == 1250.0
    assert then.timing.repeat.boundsPeriod.start.timestamp() == origin + 3600 + 12 * 3600
