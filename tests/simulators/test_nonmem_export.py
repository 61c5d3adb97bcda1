"""A simulated cohort exported as a NONMEM dataset reads back (assimilation.nonmem) as the same
doses, readings and covariates that its devices sent; what the model cannot take is refused."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from device_simulators.cohort import CohortConfig, simulate_cohort
from device_simulators.nonmem_export import COLUMNS, nonmem_rows, write_nonmem_csv
from device_simulators.truth_models import truth_model
from mipdstream.replay import read_nonmem_csv

T0 = time.time() - 10 * 86400.0


@pytest.fixture(scope="module")
def cohort():
    pytest.importorskip("jax")
    truth = truth_model("vancomycin")
    patients = simulate_cohort(truth, 3, T0, 2 * 86400.0, seed=11, config=CohortConfig())
    return truth.model, patients


def test_round_trip_gives_the_same_doses_readings_and_covariates(cohort, tmp_path):
    model, patients = cohort
    path = write_nonmem_csv(tmp_path / "cohort.csv", patients, model, origin_t=T0, leave_out={"2160-0"})
    with open(path) as handle:
        assert next(csv.reader(handle)) == list(COLUMNS) + list(model.covariate_names)
    records = read_nonmem_csv(path, model)
    assert [r.id for r in records] == [p.patient_id for p in patients]
    for patient, record in zip(patients, records):
        assert record.covariates == model.check_covariates({n: patient.covariates[n] for n in model.covariate_names})
        given = sorted((d.t, d.amount_mg, d.duration_s) for d in patient.doses if d.given)
        doses = sorted((e.time, e.amount, e.duration) for e in record.events if type(e).__name__ == "Dose")
        assert len(doses) == len(given) > 0
        np.testing.assert_allclose([(t - T0) / 3600.0 for t, _, _ in given], [t for t, _, _ in doses], atol=1e-6)
        np.testing.assert_allclose([a for _, a, _ in given], [a for _, a, _ in doses], rtol=1e-9)
        np.testing.assert_allclose([d / 3600.0 for _, _, d in given], [d for _, _, d in doses], rtol=1e-6, atol=1e-9)
        assert all(e.compartment == model.dose_compartment for e in record.events if type(e).__name__ == "Dose")
        # every plasma and ISF reading the devices sent, with its analyte and BLQ flag
        sent = []  # decoded here from the payloads' JSON, not through the wire parser the export uses
        for message in patient.messages:
            if message.topic.endswith("/reading"):
                documents = json.loads(message.payload)
                for r in documents if isinstance(documents, list) else [documents]:
                    if r["n"] != "2160-0":
                        analyte = model.analyte_index("plasma" if r["n"] == "20578-1" else "isf")
                        sent.append((r["t"], analyte, r["v"], bool(r.get("bloq"))))
        read = [(e.time, e.analyte, e.value, e.censored) for e in record.events if type(e).__name__ == "Reading"]
        sent.sort(), read.sort()
        assert len(read) == len(sent) > 100  # the biosensor's stream and the meter's levels
        np.testing.assert_allclose([(t - T0) / 3600.0 for t, *_ in sent], [t for t, *_ in read], atol=1e-6)
        assert [a for _, a, _, _ in sent] == [a for _, a, _, _ in read]
        np.testing.assert_allclose([v for _, _, v, _ in sent], [v for _, _, v, _ in read], rtol=1e-9)
        assert [c for *_, c in sent] == [c for *_, c in read]
        assert any(a == model.analyte_index("plasma") for _, a, _, _ in read)


def test_a_reading_the_model_has_no_analyte_for_is_refused_unless_left_out(cohort):
    model, patients = cohort
    with pytest.raises(ValueError, match="'2160-0'.*leave_out"):
        nonmem_rows(patients, model)
    rows = nonmem_rows(patients, model, leave_out={"2160-0"})
    assert min(float(r["TIME"]) for r in rows) == 0.0  # the default origin: the cohort's first event


def test_missed_doses_have_no_row(cohort):
    model, patients = cohort
    patient = patients[0]
    missed = patient.doses[0]
    skipped = type(missed)(missed.scheduled, missed.t, 0.0, given=False)
    from device_simulators.dose_event import dose_message
    from device_simulators.device import DeviceIdentity

    message = dose_message(DeviceIdentity("sim-missed-pump"), skipped, missed.t + 1.0)
    with_missed = type(patient)(**{**patient.__dict__, "messages": patient.messages + [message]})
    before = [r for r in nonmem_rows([patient], model, leave_out={"2160-0"}, origin_t=T0) if r["EVID"] == "1"]
    after = [r for r in nonmem_rows([with_missed], model, leave_out={"2160-0"}, origin_t=T0) if r["EVID"] == "1"]
    assert after == before
