"""assimilation.nonmem.read_records: every NONMEM record feature it reads becomes the events it
means, and every code or column it does not handle is refused naming its row and column."""

from __future__ import annotations

import csv
import io

import pytest

from assimilation import Dose, load_model
from assimilation.events import CovariateChange, Reading, Reset, SteadyState
from assimilation.nonmem import NonmemDataError, read_records

ORAL = load_model("one_compartment_oral")  # depot, central; one analyte; covariate WT
IV = load_model("two_compartment_infusion")  # central, peripheral; covariates CRCL, WT
VANCO = load_model("vancomycin")  # analytes plasma, isf; covariates CRCL, WT, DIAL
ODE = load_model("assimilation/models/examples/michaelis_menten_oral.py")


def read(text: str, model=ORAL, **options):
    reader = csv.DictReader(io.StringIO(text.strip() + "\n"))
    return read_records(reader.fieldnames, reader, model, **options)


def events(text: str, model=ORAL, **options):
    (record,) = read(text, model, **options)
    return record.events


def test_evids_mdv_and_covariate_rows():
    got = events("""
ID,TIME,AMT,DV,EVID,MDV,WT
1,0,100,.,1,1,70
1,0.5,.,3.0,0,1,70
1,1,.,4.5,0,0,70
1,2,.,.,2,1,80
1,3,.,.,3,1,80
1,4,50,.,4,1,80
1,5,.,2.0,0,0,80
""")
    assert got == [Dose(0.0, 100.0, 0, 0.0), Reading(1.0, 4.5, 0, False), CovariateChange(2.0, {"WT": 80.0}),
                   Reset(3.0), Reset(4.0), Dose(4.0, 50.0, 0, 0.0), Reading(5.0, 2.0, 0, False)]


def test_default_evid_from_amt_and_the_first_row_covariates():
    (record,) = read("ID,TIME,AMT,DV,WT\n7,0,300,.,65\n7,2,0,7.5,65")
    assert record.id == "7" and record.covariates == {"WT": 65.0}
    assert record.events == [Dose(0.0, 300.0, 0, 0.0), Reading(2.0, 7.5, 0, False)]


def test_rate_dur_and_compartments_by_number_and_name():
    got = events("""
ID,TIME,AMT,RATE,DUR,CMT,DV,EVID,CRCL,WT
1,0,1000,500,.,1,.,1,100,70
1,12,1000,0,1.5,central,.,1,100,70
1,24,100,.,.,PERIPHERAL,.,1,100,70
1,30,.,.,.,1,12.5,0,100,70
""", IV)
    assert got == [Dose(0.0, 1000.0, 0, 2.0), Dose(12.0, 1000.0, 0, 1.5), Dose(24.0, 100.0, 1, 0.0), Reading(30.0, 12.5, 0, False)]


def test_steady_state_and_additional_doses():
    got = events("""
ID,TIME,AMT,RATE,SS,II,ADDL,DV,EVID,WT
1,0,300,0,1,12,2,.,1,70
1,30,.,.,.,.,.,5.0,0,70
1,48,200,0,2,24,0,.,1,70
""")
    assert got == [SteadyState(0.0, 300.0, 12.0, 0, 0.0, False), Dose(12.0, 300.0, 0, 0.0), Dose(24.0, 300.0, 0, 0.0),
                   Reading(30.0, 5.0, 0, False), SteadyState(48.0, 200.0, 24.0, 0, 0.0, True)]


def test_additional_infusions_are_explicit_doses_with_the_same_rate():
    got = events("ID,TIME,AMT,RATE,II,ADDL,DV,CRCL,WT\n1,0,500,250,8,3,.,90,70", IV)
    assert got == [Dose(8.0 * k, 500.0, 0, 2.0) for k in range(4)]


def test_censoring_by_flag_and_by_lloq():
    got = events("""
ID,TIME,AMT,DV,CENS,LLOQ,WT
1,0,100,.,0,0.2,70
1,1,.,0.2,1,.,70
1,2,.,0,1,0.2,70
1,3,.,0.5,0,0.2,70
""")
    assert got[1:] == [Reading(1.0, 0.2, 0, True), Reading(2.0, 0.2, 0, True), Reading(3.0, 0.5, 0, False)]
    without_flag = events("ID,TIME,AMT,DV,LLOQ,WT\n1,0,100,.,.,70\n1,2,.,0.05,0.1,70\n1,3,.,0.4,0.1,70")
    assert without_flag[1:] == [Reading(2.0, 0.1, 0, True), Reading(3.0, 0.4, 0, False)]
    blq = events("ID,TIME,AMT,DV,BLQ,WT\n1,0,100,.,.,70\n1,2,.,0.1,1,70")
    assert blq[1:] == [Reading(2.0, 0.1, 0, True)]


def test_observation_cmt_and_dvid_pick_the_analyte():
    got = events("""
ID,TIME,AMT,RATE,CMT,DVID,DV,CRCL,WT,DIAL
1,0,1000,1000,1,.,.,100,70,0
1,2,.,.,1,.,20,100,70,0
1,3,.,.,isf,.,15,100,70,0
1,4,.,.,.,plasma,18,100,70,0
1,5,.,.,.,2,14,100,70,0
1,6,.,.,3,isf,13,100,70,0
""", VANCO)
    assert [(e.time, e.analyte) for e in got if isinstance(e, Reading)] == [(2.0, 0), (3.0, 1), (4.0, 0), (5.0, 1), (6.0, 1)]
    # an oral model's level read in the central compartment (CMT 2, as in tests/data/theoph.csv)
    assert events("ID,TIME,AMT,CMT,DV,WT\n1,0,100,1,.,70\n1,1,.,2,3.0,70")[1] == Reading(1.0, 3.0, 0, False)


def test_covariate_conventions_differ_in_when_a_change_starts():
    text = """
ID,TIME,AMT,DV,EVID,CRCL,WT
1,0,1000,.,1,100,70
1,6,.,20,0,100,70
1,12,1000,.,1,40,70
1,18,.,25,0,40,70
"""
    locf = [e for e in events(text, IV) if isinstance(e, CovariateChange)]
    nonmem = [e for e in events(text, IV, covariates="nonmem") if isinstance(e, CovariateChange)]
    assert locf == [CovariateChange(12.0, {"CRCL": 40.0})]  # from the row that carries it
    assert nonmem == [CovariateChange(6.0, {"CRCL": 40.0})]  # over the interval (6, 12] that ends at that row


def test_a_dose_before_a_reading_at_the_same_time_is_fine_where_the_analyte_does_not_read_its_compartment():
    got = events("ID,TIME,AMT,DV,EVID,WT\n1,0,100,.,1,70\n1,0,.,0.1,0,70")  # oral: the dose goes to the depot
    assert got == [Dose(0.0, 100.0, 0, 0.0), Reading(0.0, 0.1, 0, False)]


def test_ignored_columns_are_left_out_and_patients_keep_file_order():
    records = read("ID,TIME,AMT,DV,WT,TAD,C\n2,0,100,.,70,0,.\n2,1,.,3,70,1,.\n1,0,100,.,80,0,.", ignore=["tad", "C"])
    assert [r.id for r in records] == ["2", "1"] and records[1].covariates == {"WT": 80.0}


HEADER_ERRORS = [
    ("ID,TIME,AMT,DV,WT,TAD\n1,0,100,.,70,0", {}, 1, "TAD", "neither a NONMEM data item"),
    ("ID,TIME,AMT,DV,WT\n1,0,100,.,70", {"ignore": ["TAD"]}, 1, "TAD", "not in the header"),
    ("ID,TIME,AMT,DV,WT\n1,0,100,.,70", {"ignore": ["AMT"]}, 1, "AMT", "cannot be ignored"),
    ("ID,TIME,AMT,DV,WT,wt\n1,0,100,.,70,70", {}, 1, "wt", "twice"),
    ("ID,TIME,AMT,DV,CENS,BLQ,WT\n1,0,100,.,0,0,70", {}, 1, "BLQ", "both CENS and BLQ"),
]

ROW_ERRORS = [  # (data rows after the header ID,TIME,AMT,RATE,DUR,CMT,SS,II,ADDL,DV,EVID,MDV,CENS,LLOQ,WT; row, column, message)
    ("1,0,100,,,,,,,.,5,1,,,70", 2, "EVID", "EVID = 5 is not supported"),
    ("1,0,100,,,,,,,.,1,2,,,70", 2, "MDV", "MDV = 2"),
    ("1,0,100,,,,,,,.,1,0,,,70", 2, "MDV", "MDV = 0 on a dose row"),
    ("1,0,100,,,,,,,3,0,0,,,70", 2, "AMT", "AMT = 100 on a row that is not a dose"),
    ("1,0,0,,,,,,,.,1,1,,,70", 2, "AMT", "AMT must be > 0"),
    ("1,0,100,-1,,,,,,.,1,1,,,70", 2, "RATE", "rate modelled by the model"),
    ("1,0,100,-2,,,,,,.,1,1,,,70", 2, "RATE", "duration modelled by the model"),
    ("1,0,100,-3,,,,,,.,1,1,,,70", 2, "RATE", "RATE = -3"),
    ("1,0,100,50,2,,,,,.,1,1,,,70", 2, "DUR", "RATE and DUR both"),
    ("1,0,100,,-1,,,,,.,1,1,,,70", 2, "DUR", "DUR = -1"),
    ("1,0,100,,,7,,,,.,1,1,,,70", 2, "CMT", "CMT = 7 out of range"),
    ("1,0,100,,,lung,,,,.,1,1,,,70", 2, "CMT", "neither a compartment number"),
    ("1,0,100,,,-1,,,,.,1,1,,,70", 2, "CMT", "turn a compartment off"),
    ("1,0,,,,-2,,,,.,2,1,,,70", 2, "CMT", "turn a compartment off"),
    ("1,0,100,,,,3,12,,.,1,1,,,70", 2, "SS", "SS = 3"),
    ("1,0,100,,,,1,,,.,1,1,,,70", 2, "II", "II must be > 0"),
    ("1,0,100,,,,,,2,.,1,1,,,70", 2, "II", "II must be > 0"),
    ("1,0,100,,,,,12,,.,1,1,,,70", 2, "II", "neither SS nor ADDL"),
    ("1,0,100,,,,,-12,,.,1,1,,,70", 2, "II", "II = -12"),
    ("1,0,100,,,,,12,1.5,.,1,1,,,70", 2, "ADDL", "ADDL = 1.5"),
    ("1,0,100,,,,,12,-1,.,1,1,,,70", 2, "ADDL", "ADDL = -1"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,1,,,.,2,1,,,70", 3, "SS", "SS = 1 on a row that is not a dose"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,3,0,0,2,,70", 3, "CENS", "CENS = 2"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,3,0,0,-1,,70", 3, "CENS", "upper limit"),
    ("1,0,100,,,,,,,.,1,1,1,,70", 2, "CENS", "CENS = 1 on a row without a reading"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,0.05,0,0,0,0.1,70", 3, "CENS", "below LLOQ"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,0.05,0,0,,0,70", 3, "LLOQ", "LLOQ = 0"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,1,,,,3,0,0,,,70", 3, "CMT", "read by 0 analytes"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,,0,0,,,70", 3, "DV", "DV is empty"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,two,,,,,,,,3,0,0,,,70", 3, "TIME", "TIME has 'two'"),
    ("1,5,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,3,0,0,,,70", 3, "TIME", "TIME = 2 is before"),
    ("1,0,100,,,,,,,.,1,1,,,70\n2,0,100,,,,,,,.,1,1,,,70\n1,3,,,,,,,,3,0,0,,,70", 4, "ID", "appears again"),
    (",0,100,,,,,,,.,1,1,,,70", 2, "ID", "ID is empty"),
    ("1,0,100,,,,,,,.,1,1,,,400", 2, "WT", "outside its range"),
    ("1,0,100,,,,,,,.,1,1,,,", 2, "WT", "covariate column WT is empty"),
    ("1,0,100,,,,,,,.,1,1,,,70\n1,2,,,,,,,,3,0,0,,,700", 3, "WT", "outside its range"),
    ("1,0,100,,,,,,,3,0,0,,,70", 2, "AMT", "not a dose"),
    ("1,0,,,,,,,,3,0,0,,,70\n1,0,,,,,,,,.,3,1,,,70", 3, "TIME", "reset at the TIME of the reading on row 2"),
    ("1,0,,,,,,,,3,0,0,,,70\n1,0,100,,,,1,12,,.,1,1,,,70", 3, "TIME", "steady-state dose at the TIME of the reading on row 2"),
    ("1,0,100,,,,,,,.,1,1,,,70,9", 2, None, "more value"),
    ("1,0,100,,,,,,,.,1,1,,", 2, "WT", "WT is missing"),
]
ROW_HEADER = "ID,TIME,AMT,RATE,DUR,CMT,SS,II,ADDL,DV,EVID,MDV,CENS,LLOQ,WT"


@pytest.mark.parametrize("text, options, row, column, message", HEADER_ERRORS)
def test_header_errors_name_the_column(text, options, row, column, message):
    with pytest.raises(NonmemDataError, match=message) as caught:
        read(text, **options)
    assert (caught.value.row, caught.value.column) == (row, column)
    assert str(caught.value).startswith(f"row {row}: ")


@pytest.mark.parametrize("rows, row, column, message", ROW_ERRORS)
def test_row_errors_name_row_and_column(rows, row, column, message):
    with pytest.raises(NonmemDataError, match=message) as caught:
        read(ROW_HEADER + "\n" + rows)
    assert (caught.value.row, caught.value.column) == (row, column)
    assert str(caught.value).startswith(f"row {row}: ")


@pytest.mark.parametrize("text, model, row, column, message", [
    ("ID,TIME,AMT,SS,II,DV,WT\n1,0,100,2,12,.,70", ODE, 2, "SS", "linear dynamics only"),
    ("ID,TIME,AMT,RATE,CMT,DV,CRCL,WT\n1,0,1000,0,1,.,100,70\n1,0,.,.,1,30,100,70", IV, 3, "TIME", "after the dose"),
    ("ID,TIME,AMT,DV,CRCL,WT,DIAL\n1,0,1000,.,100,70,0\n1,2,.,20,100,70,0", VANCO, 3, "DVID", "say which one"),
    ("ID,TIME,AMT,DVID,DV,CRCL,WT,DIAL\n1,0,1000,.,.,100,70,0\n1,2,.,3,20,100,70,0", VANCO, 3, "DVID", "out of range 1..2"),
    ("ID,TIME,AMT,CMT,DVID,DV,CRCL,WT,DIAL\n1,0,1000,.,.,.,100,70,0\n1,2,.,1,isf,20,100,70,0", VANCO, 3, "CMT", "does not read"),
    ("ID,TIME,AMT,DV,CRCL,WT,DIAL\n1,0,1000,.,100,70,2", VANCO, 2, "DIAL", "not a level"),
    ("ID,TIME,AMT,RATE,SS,II,DV,CRCL,WT\n1,0,1000,100,1,2,.,100,70", IV, 2, "SS", "more than 4 intervals"),
])
def test_model_dependent_errors(text, model, row, column, message):
    with pytest.raises(NonmemDataError, match=message) as caught:
        read(text, model)
    assert (caught.value.row, caught.value.column) == (row, column)


def test_header_without_required_or_covariate_columns():
    with pytest.raises(NonmemDataError, match="missing column.*DV"):
        read("ID,TIME,AMT,WT\n1,0,100,70")
    with pytest.raises(NonmemDataError, match="covariate column WT"):
        read("ID,TIME,AMT,DV\n1,0,100,.")
    with pytest.raises(ValueError, match="covariates='last'"):
        read("ID,TIME,AMT,DV,WT\n1,0,100,.,70", covariates="last")
