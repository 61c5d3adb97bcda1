"""Patients, covariates and targets; devices and enrollment."""

import uuid


def new_id() -> str:
    return f"api-{uuid.uuid4().hex[:8]}"


def test_create_read_list_and_update_a_patient(api):
    patient_id = new_id()
    body = {"patient_id": patient_id, "model": "two_compartment_infusion", "covariates": {"CRCL": 90, "WT": 80},
            "origin_s": 1.7e9, "target": {"low": 10, "high": 20, "unit": "mg/L"}}
    with api.as_("clin-a") as clinician:
        created = clinician.post("/api/v1/patients", json=body)
        assert created.status_code == 201
        assert created.json()["team"] == "team-a" and created.json()["analytes"] == ["concentration"]
        assert clinician.get(f"/api/v1/patients/{patient_id}").json()["target"] == {"low": 10, "high": 20, "unit": "mg/L"}
        assert patient_id in [p["patient_id"] for p in clinician.get("/api/v1/patients").json()]
        updated = clinician.put(f"/api/v1/patients/{patient_id}/covariates", json={"covariates": {"CRCL": 60, "WT": 80}})
        assert updated.json()["covariates"] == {"CRCL": 60, "WT": 80}
        assert api.live.db.patient(patient_id).covariates == {"CRCL": 60, "WT": 80}
        target = clinician.put(f"/api/v1/patients/{patient_id}/target", json={"low": 15, "high": 20, "unit": "mg/L"})
        assert target.json()["target"]["low"] == 15
        assert clinician.post("/api/v1/patients", json=body).status_code == 409


def test_a_covariate_change_from_a_time_is_stored_beside_the_starting_covariates(api):
    patient_id = new_id()
    body = {"patient_id": patient_id, "model": "two_compartment_infusion", "covariates": {"CRCL": 90, "WT": 80}, "origin_s": 1.7e9}
    with api.as_("clin-a") as clinician:
        assert clinician.post("/api/v1/patients", json=body).status_code == 201
        changed = clinician.post(f"/api/v1/patients/{patient_id}/covariate-changes", json={"at_s": 1.7e9 + 86400, "values": {"CRCL": 35}})
        assert changed.status_code == 201
        assert changed.json()["covariates"] == {"CRCL": 90, "WT": 80}
        assert changed.json()["covariate_changes"] == [{"at_s": 1.7e9 + 86400, "values": {"CRCL": 35}}]
        record = api.live.db.patient(patient_id)
        assert record.covariates_at(23.0) == {"CRCL": 90, "WT": 80} and record.covariates_at(24.0) == {"CRCL": 35, "WT": 80}
        before_origin = clinician.post(f"/api/v1/patients/{patient_id}/covariate-changes", json={"at_s": 1.6e9, "values": {"CRCL": 35}})
        assert before_origin.status_code == 422 and "PUT" in before_origin.json()["detail"]
        unusable = clinician.post(f"/api/v1/patients/{patient_id}/covariate-changes", json={"at_s": 1.7e9 + 90000, "values": {"CRCL": -3}})
        assert unusable.status_code == 422
        assert len(api.live.db.patient(patient_id).covariate_changes) == 1


def test_only_library_models_and_fitting_covariates_are_accepted(api):
    with api.as_("clin-a") as clinician:
        assert "two_compartment_infusion" in [m["name"] for m in clinician.get("/api/v1/models").json()]
        for model in ("/etc/passwd", "../tests/service/models/serum_vancomycin.py", "nonexistent"):
            response = clinician.post("/api/v1/patients", json={"patient_id": new_id(), "model": model})
            assert response.status_code == 422, model
        negative = clinician.post("/api/v1/patients", json={"patient_id": new_id(), "model": "two_compartment_infusion",
                                                            "covariates": {"CRCL": -5, "WT": 70}})
        assert negative.status_code == 422
        patient_id, _ = api.serum_patient()
        inverted = clinician.put(f"/api/v1/patients/{patient_id}/target", json={"low": 20, "high": 10})
        assert inverted.status_code == 422


def test_devices_registration_enrollment_and_vendor_scope(api):
    patient_id, origin = api.serum_patient()
    with api.as_("vendor-x") as vendor:
        mine = vendor.post("/api/v1/devices", json={"device_id": "acme-1", "kind": "biosensor", "vendor": "other"})
        assert mine.status_code == 201 and mine.json()["vendor"] == "acme"  # a vendor registers as itself
    with api.as_("admin-a") as admin:
        assert admin.post("/api/v1/devices", json={"device_id": "ward-1", "kind": "poc-meter", "vendor": "globex"}).status_code == 201
    with api.as_("clin-a") as clinician:
        assert clinician.post("/api/v1/devices", json={"device_id": "x", "kind": "poc-meter"}).status_code == 403
        enrolled = clinician.post(f"/api/v1/patients/{patient_id}/enrollments", json={"device_id": "acme-1"})
        assert enrolled.status_code == 201 and enrolled.json()["valid_to"] is None
        assert clinician.post(f"/api/v1/patients/{patient_id}/enrollments", json={"device_id": "ghost"}).status_code == 404
        assert [e["device_id"] for e in clinician.get(f"/api/v1/patients/{patient_id}/enrollments").json()] == ["acme-1"]
        assert "acme-1" in [d["device_id"] for d in clinician.get("/api/v1/devices").json()]
        assert "ward-1" not in [d["device_id"] for d in clinician.get("/api/v1/devices").json()]  # enrolled to no one
    other_patient, _ = api.serum_patient(team="team-b")
    with api.as_("clin-b") as other:
        taken = other.post(f"/api/v1/patients/{other_patient}/enrollments", json={"device_id": "acme-1"})
        assert taken.status_code == 409
        assert other.get("/api/v1/devices/acme-1/conformance").status_code == 404
        assert "acme-1" not in [d["device_id"] for d in other.get("/api/v1/devices").json()]
    with api.as_("vendor-x") as vendor:
        devices = [d["device_id"] for d in vendor.get("/api/v1/devices").json()]
        assert "acme-1" in devices and "ward-1" not in devices
        assert vendor.get("/api/v1/devices/ward-1/conformance").status_code == 404
        assert vendor.post("/api/v1/devices", json={"device_id": "ward-1", "kind": "poc-meter"}).status_code == 409


def test_vendor_sees_rejected_messages_of_its_device(api):
    patient_id, origin = api.serum_patient()
    device_id = api.device_for(patient_id, origin)
    import json
    from tests.publishing import AckedPublisher
    from wire.topics import TopicKind, device_topic

    publisher = AckedPublisher(api.live.ingest.url, "bad-device", protocol="3.1.1")
    publisher.publish(device_topic(device_id, TopicKind.READING), "bad", json.dumps({"id": "bad", "seq": 1, "t": origin + 60,
                                                                                     "n": "20578-1", "u": "furlongs", "v": 1}))
    publisher.close()
    from tests.publishing import wait_until

    with api.as_("vendor-x") as vendor:
        assert wait_until(lambda: vendor.get(f"/api/v1/devices/{device_id}/conformance").json()["rejected"] == 1, timeout=20)
        report = vendor.get(f"/api/v1/devices/{device_id}/conformance").json()
        assert len(report["reasons"]) == 1 and report["recent"][0]["topic"].endswith("reading")
