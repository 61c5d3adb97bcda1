"""A user model file (loaded by path): the built-in two-compartment infusion model observed
by serum vancomycin readings (LOINC 20578-1, mg/L) off the wire."""

from assimilation import Analyte, Model, load_model

base = load_model("two_compartment_infusion")
serum = base.analytes[0]
model = Model(
    name="serum_vancomycin_test",
    population=base.population,
    dynamics=base.dynamics,
    compartments=base.compartments,
    analytes=(Analyte("serum", serum.predict, serum.error, lloq=serum.lloq, unit="mg/L", code="20578-1"),),
    covariates=base.covariates,
)
