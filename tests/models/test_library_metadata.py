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
