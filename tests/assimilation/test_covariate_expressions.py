"""Typical values as expressions of covariates (``Typical``, ``Population.of``): the prior mean
is log θ_typical(covariates) as the publication writes it, the one-covariate effects are the
same one-line forms, the model checks what an expression reads, and time-varying covariates
shift the particles by the change of the expression."""

import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import (
    Additive, Analyte, Categorical, CategoricalEffect, Continuous, CovariateError, ExponentialEffect, LinearCompartments,
    Model, Population, PowerEffect, Typical, load_model, online,
)
from assimilation.events import CovariateChange
from assimilation.models.covariate_effects import LinearEffect
from assimilation.parameters import covariate_shift, exponential, level, linear, power, prior_mean, typical_values

MINTO = "assimilation/models/examples/minto_remifentanil.py"
PHENO = "assimilation/models/examples/pheno.py"


def _one_compartment(population, covariates=()):
    return Model(name="expression-test", population=population,
                 dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])), compartments=("central",),
                 analytes=(Analyte("c", lambda p, x: x[0] / p["V"], Additive(0.5)),), covariates=covariates)


def test_additive_indicator_categorical_and_piecewise_expressions_give_the_prior_mean():
    """log θ_typical written out by hand for three patients: a volume additive in two
    covariates, a clearance with an indicator, a categorical level and a capped covariate."""
    population = Population.of(
        {
            "CL": lambda CRCL, DIAL, AGE: 4.5 * (min(CRCL, 150.0) / 120.0) ** 0.8 * level(DIAL, {1: 0.7}) * (1 - 0.2 * (AGE >= 65)),
            "V": lambda AGE, LBM: 5.1 - 0.0201 * (AGE - 40) + 0.072 * (LBM - 55),
        },
        omega=np.diag([0.1, 0.1]),
        reference={"CRCL": 120.0, "DIAL": 0, "AGE": 40.0, "LBM": 55.0},
    )
    np.testing.assert_allclose(population.typical, [4.5, 5.1])
    patients = [
        ({"CRCL": 60.0, "DIAL": 0, "AGE": 70.0, "LBM": 50.0}, 4.5 * 0.5**0.8 * 0.8, 5.1 - 0.0201 * 30 - 0.072 * 5),
        ({"CRCL": 200.0, "DIAL": 1, "AGE": 30.0, "LBM": 70.0}, 4.5 * 1.25**0.8 * 0.7, 5.1 + 0.201 + 0.072 * 15),
        ({"CRCL": 120.0, "DIAL": 0, "AGE": 64.0, "LBM": 55.0}, 4.5, 5.1 - 0.0201 * 24),
    ]
    for covariates, cl, v in patients:
        np.testing.assert_allclose(np.exp(prior_mean(population, covariates)), [cl, v], rtol=1e-13)
        assert typical_values(population, covariates) == pytest.approx({"CL": cl, "V": v}, rel=1e-13)


def test_one_covariate_effects_are_the_one_line_forms():
    """Each effect's log factor is the log of its form, and an expression built from the forms
    gives the prior mean of the effects."""
    wt, age, crcl, sex = 52.0, 77.0, 41.0, "F"
    assert PowerEffect("CL", "WT", 70.0, 0.75).log_effect(wt) == pytest.approx(np.log((wt / 70.0) ** 0.75), rel=1e-14)
    assert ExponentialEffect("CL", "AGE", 40.0, -0.01).log_effect(age) == pytest.approx(-0.01 * 37.0, rel=1e-14)
    assert CategoricalEffect("V", "SEX", (("F", 0.8),)).log_effect(sex) == pytest.approx(np.log(0.8), rel=1e-14)
    assert LinearEffect("CL", "CRCL", 66.0, 0.0154).log_effect(crcl) == pytest.approx(np.log(1 + 0.0154 * (41 - 66)), rel=1e-14)
    assert LinearEffect("CL", "CRCL", 66.0, 0.0154).log_effect(-100.0) == pytest.approx(np.log(0.05))  # the floor
    effects = Population(("CL", "V"), np.array([4.0, 50.0]), np.diag([0.1, 0.1]), (
        PowerEffect("CL", "WT", 70.0, 0.75), ExponentialEffect("CL", "AGE", 40.0, -0.01), LinearEffect("CL", "CRCL", 66.0, 0.0154),
        CategoricalEffect("V", "SEX", (("F", 0.8),))))
    expressions = Population.of(
        {"CL": lambda WT, AGE, CRCL: 4.0 * power(WT, 70.0, 0.75) * exponential(AGE, 40.0, -0.01) * linear(CRCL, 66.0, 0.0154, 0.05),
         "V": lambda SEX: 50.0 * level(SEX, {"F": 0.8})},
        omega=np.diag([0.1, 0.1]), reference={"WT": 70.0, "AGE": 40.0, "CRCL": 66.0, "SEX": "M"})
    patient = {"WT": wt, "AGE": age, "CRCL": crcl, "SEX": sex}
    np.testing.assert_allclose(prior_mean(expressions, patient), prior_mean(effects, patient), rtol=1e-13)
    np.testing.assert_allclose(covariate_shift(expressions, patient), covariate_shift(effects, patient), rtol=1e-12)


def test_an_expression_and_an_effect_on_the_same_parameter_multiply():
    population = Population.of({"CL": lambda WT: 0.06 * WT, "V": 30.0}, omega=np.diag([0.1, 0.1]), reference={"WT": 70.0},
                               effects=[CategoricalEffect("CL", "SMOKER", ((1, 1.5),))])
    np.testing.assert_allclose(np.exp(prior_mean(population, {"WT": 50.0, "SMOKER": 1})), [0.06 * 50 * 1.5, 30.0], rtol=1e-13)


def test_the_expression_reads_what_its_signature_names_and_nothing_else():
    expression = Typical("V", lambda WGT, APGR: WGT * (1 + (APGR < 5)))
    assert expression.reads == ("WGT", "APGR")
    assert expression.value({"APGR": 3, "WGT": 2.0, "UNUSED": "x"}) == 4.0
    assert Typical("V", lambda weight: weight, reads=("BODY WEIGHT",)).value({"BODY WEIGHT": 3.0}) == 3.0
    with pytest.raises(KeyError, match="'APGR' needed by the typical value of 'V'"):
        expression.value({"WGT": 2.0})
    with pytest.raises(TypeError, match="plain argument"):
        Typical("V", lambda **covariates: 1.0)
    with pytest.raises(TypeError, match="does not take them"):
        Typical("V", lambda a: a, reads=("A", "B"))
    with pytest.raises(CovariateError, match="typical value of 'V' is -0.5 for WGT=-0.5"):
        Typical("V", lambda WGT: WGT).value({"WGT": -0.5})


def test_population_of_needs_a_reference_patient_for_expressions():
    with pytest.raises(ValueError, match="reference"):
        Population.of({"CL": lambda WT: WT, "V": 1.0}, omega=np.eye(2))
    with pytest.raises(ValueError, match=r"omega has shape \(3, 3\)"):
        Population.of({"CL": 1.0, "V": 1.0}, omega=np.eye(3))


def test_the_model_checks_the_covariates_an_expression_reads():
    population = Population.of({"CL": lambda WT, AGE: 0.05 * WT - 0.03 * (AGE - 40), "V": lambda WT: 0.7 * WT},
                               omega=np.diag([0.1, 0.1]), reference={"WT": 70.0, "AGE": 40.0})
    weight, age = Continuous("WT", "kg", 20.0, 250.0), Continuous("AGE", "a", 18.0, 100.0)
    with pytest.raises(ValueError, match="the typical value of 'CL' uses covariate 'AGE', which is not declared"):
        _one_compartment(population, (weight,))
    model = _one_compartment(population, (weight, age))
    assert model.check_covariates({"WT": 80.0, "AGE": 60.0}) == {"WT": 80.0, "AGE": 60.0}
    # each value within its range, yet the expression gives no clearance: an error that names it
    with pytest.raises(CovariateError, match="typical value of 'CL'"):
        model.check_covariates({"WT": 20.0, "AGE": 100.0})
    assert _one_compartment(population).covariate_names == ("WT", "AGE")  # undeclared: what the expressions read
    with pytest.raises(CovariateError, match="unknown covariate 'HT'"):
        _one_compartment(population).check_covariates({"WT": 80.0, "AGE": 60.0, "HT": 180.0})


def test_the_model_rejects_expressions_for_unknown_or_twice_expressed_parameters():
    base = Population.of({"CL": lambda WT: 0.05 * WT, "V": 30.0}, omega=np.diag([0.1, 0.1]), reference={"WT": 70.0})
    with pytest.raises(ValueError, match="'Q', which is not a population parameter"):
        _one_compartment(base._replace(effects=base.effects + (Typical("Q", lambda WT: WT),)))
    with pytest.raises(ValueError, match="'CL' has more than one typical-value expression"):
        _one_compartment(base._replace(effects=base.effects + (Typical("CL", lambda WT: WT),)))


def test_categorical_levels_of_an_expression_come_from_the_typed_covariate():
    """APGR is declared with integer levels: a float 3.0 from a CSV becomes level 3, and the
    indicator in the expression sees an integer."""
    model = load_model(PHENO)
    checked = model.check_covariates({"WGT": 1.0, "APGR": 3.0})
    assert checked == {"WGT": 1.0, "APGR": 3} and isinstance(checked["APGR"], int)
    theta1, theta2, theta3 = 4.69555e-03, 9.84258e-01, 1.58920e-01  # pheno_real.ext
    np.testing.assert_allclose(np.exp(model.prior_mean(checked)), [theta1, theta2 * (1 + theta3)], rtol=1e-13)
    np.testing.assert_allclose(np.exp(model.prior_mean({"WGT": 2.0, "APGR": 5})), [2 * theta1, 2 * theta2], rtol=1e-13)
    assert isinstance(model.covariates[1], Categorical)


def test_minto_expressions_match_the_published_equations():
    """Minto 1997 in L and L/min (as transcribed by PyTCI), against the model's L/h, for a
    young heavy and an old light patient."""
    model = load_model(MINTO)
    for age, lbm in ((25.0, 70.0), (80.0, 45.0)):
        published = {
            "CL": 2.6 - 0.0162 * (age - 40) + 0.0191 * (lbm - 55), "V1": 5.1 - 0.0201 * (age - 40) + 0.072 * (lbm - 55),
            "Q2": 2.05 - 0.0301 * (age - 40), "V2": 9.82 - 0.0811 * (age - 40) + 0.108 * (lbm - 55),
            "Q3": 0.076 - 0.00113 * (age - 40), "V3": 5.42,
        }
        per_hour = {name: value * (60.0 if name[0] in "CQ" else 1.0) for name, value in published.items()}
        assert typical_values(model.population, {"AGE": age, "LBM": lbm}) == pytest.approx(per_hour, rel=1e-13)


def test_the_expression_is_part_of_the_model_description():
    """The repr (in the model's version hash) holds the expression's source, not an address."""
    text = repr(load_model(PHENO).population.effects[1])
    assert "APGR < 5" in text and "0x" not in text


def test_a_covariate_change_shifts_every_particle_by_the_change_of_the_expression():
    """Additive in creatinine clearance: CL = 1 + 0.05 CrCL; from CrCL 100 to 20 mL/min the
    log CL of every particle moves by log(2/6), the other parameter not at all."""
    population = Population.of({"CL": lambda CRCL: 1.0 + 0.05 * CRCL, "V": 40.0}, omega=np.diag([0.09, 0.04]),
                               reference={"CRCL": 100.0})
    model = _one_compartment(population, (Continuous("CRCL", "mL/min", 1.0, 300.0),))
    posterior = online.init(model, {"CRCL": 100.0}, 0, 64, "pf")
    before = online.particles(posterior).log_params
    after = online.particles(online.update(posterior, [CovariateChange(2.0, {"CRCL": 20.0})])).log_params
    np.testing.assert_allclose(after[:, 0] - before[:, 0], np.log(2.0 / 6.0), rtol=1e-5)
    np.testing.assert_allclose(after[:, 1], before[:, 1], rtol=0, atol=0)
