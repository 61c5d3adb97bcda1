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
        target = clinician.get(f"/api/v1/patients/{patient_id}").json()["target"]
        assert target == {"quantity": "level", "low": 10, "high": 20, "unit": "mg/L", "source": "team", "citation": "set by the care team"}
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


def test_covariates_are_typed_by_the_model_and_a_bad_value_names_the_covariate_and_what_it_allows(api):
    with api.as_("clin-a") as clinician:
        models = {m["name"]: m for m in clinician.get("/api/v1/models").json()}
        warfarin = {c["name"]: c for c in models["warfarin_hamberg"]["covariates"]}
        assert warfarin["CYP2C9"]["type"] == "categorical" and "*3/*3" in warfarin["CYP2C9"]["levels"]
        assert warfarin["AGE"]["type"] == "continuous" and warfarin["AGE"]["unit"] == "a"
        assert {c["name"] for c in models["vancomycin"]["covariates"]} == {"CRCL", "WT", "DIAL"}

        def create(model, covariates):
            return clinician.post("/api/v1/patients", json={"patient_id": new_id(), "model": model, "covariates": covariates})

        good = create("warfarin_hamberg", {"CYP2C9": "*1/*3", "VKORC1": "A/G", "AGE": 70})
        assert good.status_code == 201 and good.json()["covariates"] == {"CYP2C9": "*1/*3", "VKORC1": "G/A", "AGE": 70.0}
        for covariates, named, allowed in (
            ({"CYP2C9": "*1/*5", "VKORC1": "G/G", "AGE": 70}, "CYP2C9", "'*3/*3'"),  # a genotype Hamberg did not estimate
            ({"CYP2C9": "*1/*1", "VKORC1": "G/G", "AGE": 170}, "AGE", "18 to 110"),
            ({"CYP2C9": "*1/*1", "VKORC1": "G/G"}, "AGE", "18 to 110"),  # missing
            ({"CYP2C9": "*1/*1", "VKORC1": "G/G", "AGE": 60, "WT": 80}, "WT", "CYP2C9, VKORC1, AGE"),  # not this model's
            ({"CYP2C9": 3, "VKORC1": "G/G", "AGE": 60}, "CYP2C9", "'*1/*1'"),
        ):
            refused = create("warfarin_hamberg", covariates)
            assert refused.status_code == 422, covariates
            assert named in refused.json()["detail"] and allowed in refused.json()["detail"], refused.json()
        assert create("vancomycin", {"CRCL": 80, "WT": 70, "DIAL": 2}).status_code == 422
        vanco = create("vancomycin", {"CRCL": 80, "WT": 70, "DIAL": 1.0})
        assert vanco.status_code == 201 and vanco.json()["covariates"]["DIAL"] == 1


def test_every_patient_of_a_drug_has_its_cited_target_unless_the_team_sets_another(api):
    with api.as_("clin-a") as clinician:
        models = {m["name"]: m for m in clinician.get("/api/v1/models").json()}
        for name, quantity, low, high, unit in (("vancomycin", "AUC24", 400, 600, "mg.h/L"), ("warfarin_hamberg", "INR", 2, 3, "{INR}"),
                                                ("docetaxel_friberg", "ANC nadir", 0.5, 1.5, "10*9/L")):
            default = models[name]["default_target"]
            assert (default["quantity"], default["low"], default["high"], default["unit"], default["source"]) == (quantity, low, high, unit, "default")
            assert default["citation"]
        patient_id = new_id()
        created = clinician.post("/api/v1/patients", json={"patient_id": patient_id, "model": "vancomycin",
                                                           "covariates": {"CRCL": 80, "WT": 70, "DIAL": 0}})
        assert created.json()["target"]["quantity"] == "AUC24" and created.json()["target"]["source"] == "default"
        wrong_unit = clinician.put(f"/api/v1/patients/{patient_id}/target", json={"low": 10, "high": 20, "unit": "mg/L"})
        assert wrong_unit.status_code == 422 and "AUC24" in wrong_unit.json()["detail"]
        own = clinician.put(f"/api/v1/patients/{patient_id}/target", json={"low": 450, "high": 650, "unit": "mg.h/L"})
        assert own.json()["target"] == {"quantity": "AUC24", "low": 450, "high": 650, "unit": "mg.h/L", "source": "team",
                                        "citation": models["vancomycin"]["default_target"]["citation"]}
        row = next(r for r in clinician.get("/api/v1/triage").json() if r["patient_id"] == patient_id)
        assert row["risk"] == 1.0 and "no dose" in row["risk_basis"]  # none of these targets is met without the drug
