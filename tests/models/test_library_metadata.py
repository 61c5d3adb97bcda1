"""Every library model meets the wire contract: its analytes have wire codes with the same
canonical unit, its drug is a wire drug, and it loads by path like a user model."""

import importlib

import pytest

from wire.analytes import ANALYTES, DRUGS

from .helpers import library_model

LIBRARY = ["vancomycin", "vancomycin_thomson", "vancomycin_purwonugroho2012", "docetaxel_friberg", "warfarin_hamberg"]


@pytest.mark.parametrize("name", LIBRARY)
def test_analytes_have_wire_codes_with_the_canonical_unit(name):
    module = importlib.import_module(f"assimilation.models.{name}")
    model = library_model(name)
    assert model.name == name
    assert module.DRUG in DRUGS
    for analyte in model.analytes:
        wire = ANALYTES[analyte.code]  # the live service matches readings to analytes by code
        assert analyte.unit == wire.unit


@pytest.mark.parametrize("name", LIBRARY)
def test_targets_and_metrics_are_declared(name):
    module = importlib.import_module(f"assimilation.models.{name}")
    assert module.TARGETS and module.METRICS
    assert all(callable(f) for f in module.METRICS.values())
    assert {e.covariate for e in module.population.effects} <= set(module.COVARIATES)


@pytest.mark.parametrize("name", ["vancomycin", "vancomycin_thomson", "docetaxel_friberg", "warfarin_hamberg"])
def test_every_code_the_simulated_devices_send_is_read_by_the_model(name):
    """The live service drops a reading no analyte reads: a simulated point-of-care INR
    (LOINC 34714-6) against a model that reads only the laboratory's 6301-6 left every
    warfarin posterior at its prior."""
    from device_simulators.library_model import BINDINGS
    from ingest.records import StoredReading
    from mipdstream.service.events import reading_event
    from mipdstream.service.state_db import PatientRecord

    model = library_model(name)
    binding = BINDINGS[name]
    sent = {*binding.analyte_codes.values(), binding.plasma_analyte}  # what its sensors and meters send
    patient = PatientRecord("P1", name, {}, 0.0)
    for code in sent:
        reading = StoredReading("P1", "dev", "r1", 1, code, 1.0, ANALYTES[code].unit, 3600.0, 3600.0)
        event = reading_event(patient, model, reading)
        assert event is not None, f"{name} reads no analyte with code {code}"
        assert model.analytes[event.event.analyte].unit == ANALYTES[code].unit


def test_point_of_care_and_laboratory_inr_are_the_same_warfarin_analyte():
    model = library_model("warfarin_hamberg")
    assert model.analytes[0].codes == ("6301-6", "34714-6")
    assert model.analytes[0].reads("34714-6") and model.analytes[0].reads("6301-6") and model.analytes[0].reads("inr")
    assert not model.analytes[0].reads("751-8")
