"""Reproducibility records: hashes change with what they describe, and only with that."""

import dataclasses

import numpy as np

from assimilation import Dose, load_model
from dosing_policy import data_hash, model_hash, provenance


def test_model_hash_is_stable_and_sensitive_to_parameters():
    model = load_model("two_compartment_infusion")
    assert model_hash(model) == model_hash(model)
    changed = dataclasses.replace(model, population=model.population._replace(typical=np.array([4.6, 58.4, 6.5, 38.4])))
    assert model_hash(changed) != model_hash(model)
    assert len(model_hash(model)) == 64


def test_data_hash_ignores_arrival_order_but_not_values():
    events = [Dose(0.0, 1000.0, 0, 1.0), Dose(12.0, 1000.0, 0, 1.0)]
    assert data_hash(events) == data_hash(events[::-1])
    assert data_hash(events) != data_hash([Dose(0.0, 1000.0, 0, 1.0), Dose(12.0, 1000.0001, 0, 1.0)])


def test_provenance_record_names_model_data_settings_and_seed():
    model = load_model("two_compartment_infusion")
    record = provenance(model, [Dose(0.0, 1000.0)], "pf", {"n_particles": 1000, "threshold": 0.5}, 42)
    assert record.model_id == "two_compartment_infusion" and record.seed == 42
    assert '"n_particles": 1000' in record.filter_settings and '"method": "pf"' in record.filter_settings
