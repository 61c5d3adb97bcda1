"""FHIR R4 export, validated with the fhir.resources models (R4B: the R4 line of that package)."""

import time

from fhir.resources.R4B.bundle import Bundle


def test_export_validates_and_carries_codes_units_devices_and_accepted_orders(api):
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
        exported = clinician.get(f"/api/v1/patients/{patient_id}/fhir")
    assert exported.status_code == 200
    bundle = Bundle.model_validate(exported.json())  # raises on any invalid resource
    assert bundle.type == "collection"
    resources = [entry.resource for entry in bundle.entry]
    by_type = {}
    for resource in resources:
        by_type.setdefault(resource.__resource_type__, []).append(resource)
    observations = by_type["Observation"]
    assert sorted(o.valueQuantity.value for o in observations) == [14.25, 19.5]
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
