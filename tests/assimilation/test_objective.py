"""The population objective (-2 log-likelihood at a model's own values): NONMEM's published
pheno run reproduced from its final estimates, the approximations against exact quadrature on
a model with a time-varying covariate, and the `mipd objective` command."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from assimilation import Combined, Continuous, Dose, LinearCompartments, Model, Population, load_model
from assimilation.events import CovariateChange, Reading
from assimilation.model import Analyte
from assimilation.objective import objective
from assimilation.replay import PatientRecord
from assimilation.simulate import amounts_at, dose_table_of

DATA = Path(__file__).resolve().parents[1] / "data"
PHENO = "assimilation/models/examples/pheno.py"
# pheno_real.lst (NONMEM 7.4.2, FOCE INTERACTION): "N*LOG(2PI) CONSTANT TO OBJECTIVE FUNCTION: 284.87094529344853"
PHENO_CONSTANT = 284.87094529344853


def read_pheno(path: Path) -> list[PatientRecord]:
    """tests/data/pheno.csv through the product's reader (FA1/FA2 are NONMEM's dose/level flags,
    which EVID defaulting from AMT replaces)."""
    from mipdstream.replay import read_nonmem_csv

    return read_nonmem_csv(path, load_model(PHENO), ignore=("FA1", "FA2"))


@pytest.fixture(scope="module")
def pheno():
    return load_model(PHENO), read_pheno(DATA / "pheno.csv")


def test_pheno_reproduces_the_published_nonmem_objective(pheno):
    """FOCE-I at the final estimates of pheno_real.ext gives the OFV of pheno_real.lst
    (586.27605628188053; measured here 586.2760563, 1e-8 apart); the Laplace approximation and
    importance sampling, which NONMEM did not report for this run, lie within 0.5 of it."""
    model, patients = pheno
    focei = objective(model, patients, "focei")
    assert len(focei.individuals) == 59 and focei.n_readings == 155
    assert focei.constant == pytest.approx(PHENO_CONSTANT, abs=1e-9)
    assert focei.converged
    assert focei.value == pytest.approx(586.27605628188053, abs=0.01)
    assert focei.with_constant == pytest.approx(871.14700157532911, abs=0.01)  # "WITH CONSTANT" in the .lst
    laplace = objective(model, patients, "laplace")
    sampled = objective(model, patients, "importance", samples=10_000, seed=1)
    assert laplace.converged and sampled.standard_error < 0.2
    assert abs(laplace.value - 586.276) < 0.5 and abs(sampled.value - 586.276) < 0.5


def test_the_pheno_check_fails_without_the_apgar_indicator(pheno):
    """What the 0.01 above can tell apart: V without the low-Apgar term (θ3 = 0) moves the
    objective by more than 0.5."""
    model, patients = pheno
    plain = Population.of({"CL": lambda WGT: 4.69555e-03 * WGT, "V": lambda WGT: 9.84258e-01 * WGT},
                          omega=model.population.omega, reference={"WGT": 1.3})
    without = Model(name="pheno-without-apgar", population=plain, dynamics=model.dynamics, compartments=model.compartments,
                    analytes=model.analytes, covariates=model.covariates[:1])
    stripped = [p._replace(covariates={"WGT": p.covariates["WGT"]}) for p in patients]
    assert abs(objective(without, stripped, "focei").value - 586.276) > 0.5


# ----------------------------------------------------------------------------- exact quadrature

CL_OF = {"slope": 0.05, "intercept": 1.0}  # CL = 1 + 0.05 CrCL (L/h), additive in the covariate
V_TYPICAL, OMEGA, ERROR = 30.0, (0.09, 0.04), (0.3, 0.15)
RECORDS = [  # (CrCL at start, change (time, CrCL) or None, doses (time, mg), levels (time, mg/L))
    (90.0, (10.0, 30.0), [(0.0, 600.0), (12.0, 600.0)], [(2.0, 14.1), (11.0, 3.9), (20.0, 13.0)]),
    (40.0, None, [(0.0, 400.0)], [(4.0, 9.2), (16.0, 3.1)]),
    (120.0, (6.0, 120.0 * 0.8), [(0.0, 800.0), (8.0, 400.0)], [(1.0, 20.3), (9.0, 15.5), (14.0, 5.9)]),
]


def _tv_model() -> Model:
    population = Population.of({"CL": lambda CRCL: CL_OF["intercept"] + CL_OF["slope"] * CRCL, "V": V_TYPICAL},
                               omega=np.diag(OMEGA), reference={"CRCL": 100.0})
    return Model(name="objective-tv-test", population=population,
                 dynamics=LinearCompartments(1, lambda p: jnp.array([[-p["CL"] / p["V"]]])),
                 compartments=("central",), analytes=(Analyte("c", lambda p, x: x[0] / p["V"], Combined(*ERROR)),),
                 covariates=(Continuous("CRCL", "mL/min", 1.0, 300.0),))


def _records():
    out = []
    for i, (crcl, change, doses, levels) in enumerate(RECORDS):
        events = [Dose(t, a) for t, a in doses] + [Reading(t, y) for t, y in levels]
        if change is not None:
            events.append(CovariateChange(change[0], {"CRCL": change[1]}))
        out.append(PatientRecord(i, {"CRCL": crcl}, events))
    return out


def _exact_minus_two_log_l(crcl, change, doses, levels, nodes=120):
    """−2 log ∫∫ p(y | η) N(η; 0, Ω) dη by Gauss-Hermite quadrature, from the closed form of a
    one-compartment bolus model whose elimination rate changes at the covariate change."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)  # ∫ f(z) e^{−z²/2} dz ≈ Σ w f(x)
    w = w / math.sqrt(2 * math.pi)
    eta_cl, eta_v = np.meshgrid(math.sqrt(OMEGA[0]) * x, math.sqrt(OMEGA[1]) * x, indexing="ij")
    weight = np.outer(w, w)
    v = V_TYPICAL * np.exp(eta_v)
    cl_of = lambda c: (CL_OF["intercept"] + CL_OF["slope"] * c) * np.exp(eta_cl)  # noqa: E731
    switch, after = (change if change is not None else (np.inf, crcl))
    k1, k2 = cl_of(crcl) / v, cl_of(after) / v
    log_lik = 0.0
    for t, y in levels:
        amount = 0.0
        for t_dose, dose in doses:
            if t_dose >= t:
                continue
            first = min(t, max(switch, t_dose)) - t_dose
            amount = amount + dose * np.exp(-k1 * first - k2 * (t - t_dose - first))
        f = amount / v
        sd = np.sqrt(ERROR[0] ** 2 + (ERROR[1] * f) ** 2)
        log_lik = log_lik - 0.5 * ((y - f) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)
    top = log_lik.max()
    return -2.0 * (top + math.log(np.sum(weight * np.exp(log_lik - top))))


def test_approximations_against_quadrature_with_a_time_varying_covariate():
    """Importance sampling within 4 Monte Carlo SEs of the exact objective; Laplace and FOCE-I
    within 0.3 (their approximation error on these sparse records)."""
    n_normal = sum(len(levels) for *_, levels in RECORDS)
    exact = sum(_exact_minus_two_log_l(*record) for record in RECORDS) - n_normal * math.log(2 * math.pi)
    model, records = _tv_model(), _records()
    sampled = objective(model, records, "importance", samples=20_000, seed=3)
    assert abs(sampled.value - exact) < 4 * sampled.standard_error + 1e-3, (sampled.value, sampled.standard_error, exact)
    for method in ("laplace", "focei"):
        result = objective(model, records, method)
        assert result.converged and abs(result.value - exact) < 0.3, (method, result.value, exact)


def test_the_quadrature_check_sees_a_covariate_change_that_is_ignored():
    """The check above can fail: the same records without the covariate changes give an
    importance-sampled objective far outside its Monte Carlo error of the exact value."""
    n_normal = sum(len(levels) for *_, levels in RECORDS)
    exact = sum(_exact_minus_two_log_l(*record) for record in RECORDS) - n_normal * math.log(2 * math.pi)
    unchanged = [r._replace(events=[e for e in r.events if not isinstance(e, CovariateChange)]) for r in _records()]
    sampled = objective(_tv_model(), unchanged, "importance", samples=20_000, seed=3)
    assert abs(sampled.value - exact) > 10 * sampled.standard_error + 0.1


def test_censored_readings_need_laplace_or_importance():
    model, records = _tv_model(), _records()
    censored = records[1]._replace(events=list(records[1].events) + [Reading(30.0, 1.0, censored=True)])
    with pytest.raises(ValueError, match="censored reading.*FOCE-I"):
        objective(model, [censored], "focei")
    result = objective(model, [censored], "laplace")
    assert result.n_readings == 2 and math.isfinite(result.value)  # the censored reading is not in N


def test_bad_input_is_named():
    model, records = _tv_model(), _records()
    with pytest.raises(ValueError, match="unknown method 'foce'"):
        objective(model, records, "foce")
    with pytest.raises(ValueError, match="covariate 'CRCL'"):
        objective(model, [records[0]._replace(covariates={"CRCL": 900.0})])


# ----------------------------------------------------------------------------- the command


def test_mipd_objective_prints_the_objective_of_a_dataset():
    """`mipd objective tests/data/theoph.csv --model one_compartment_oral` prints the values
    the library computes on the same records."""
    from mipdstream.cli import app
    from mipdstream.replay import read_nonmem_csv

    result = CliRunner().invoke(app, ["objective", str(DATA / "theoph.csv"), "--model", "one_compartment_oral",
                                      "--method", "focei", "--method", "laplace"])
    assert result.exit_code == 0, result.output
    model = load_model("one_compartment_oral")
    patients = read_nonmem_csv(DATA / "theoph.csv", model)
    for label, method in (("FOCE-I", "focei"), ("Laplace", "laplace")):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(label))
        assert float(line.split()[1]) == pytest.approx(objective(model, patients, method).value, abs=1e-5)
    assert "N log(2 pi)" in result.output
    bad = CliRunner().invoke(app, ["objective", str(DATA / "theoph.csv"), "--model", "one_compartment_oral", "--method", "fo"])
    assert bad.exit_code == 2 and "unknown method 'fo'" in bad.output


def test_mipd_objective_on_pheno_prints_nonmems_objective():
    """The published pheno run's FOCE-I OFV (pheno_real.lst: 586.27605628188053) from the CLI,
    and a column the model does not use is refused unless ignored on purpose."""
    from mipdstream.cli import app

    args = ["objective", str(DATA / "pheno.csv"), "--model", PHENO, "--method", "focei"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "column FA1" in refused.output
    result = CliRunner().invoke(app, args + ["--ignore", "FA1", "--ignore", "FA2"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("FOCE-I"))
    assert float(line.split()[1]) == pytest.approx(586.27605628188053, abs=0.01)


def test_three_compartment_objective_differentiates_through_the_eigensolver():
    """Minto's remifentanil model (3 compartments: the general eigensolver, whose eigenvector
    derivatives the objective opts into): on levels simulated from it, every mode is found
    and importance sampling agrees with the Laplace approximation."""
    model = load_model("assimilation/models/examples/minto_remifentanil.py")
    rng = np.random.default_rng(5)
    times = np.array([2.0, 5.0, 10.0, 20.0, 30.0, 60.0]) / 60.0  # h
    records = []
    for i, (age, lbm) in enumerate(((30.0, 60.0), (55.0, 48.0), (75.0, 52.0))):
        covariates = {"AGE": age, "LBM": lbm}
        doses = [Dose(0.0, 600.0, "central", 10.0 / 60.0)]  # µg over 10 min
        truth = model.prior_mean(covariates) + rng.normal(0.0, 0.3, 6)
        with jax.enable_x64(True):
            amounts = np.asarray(amounts_at(model, jnp.asarray(truth), dose_table_of(model, doses, dtype=jnp.float64), jnp.asarray(times)))
        levels = amounts[:, 0] / np.exp(truth[1]) * np.exp(rng.normal(0.0, 0.2, times.size))
        records.append(PatientRecord(i, covariates, doses + [Reading(t, y) for t, y in zip(times, levels)]))
    laplace = objective(model, records, "laplace")
    sampled = objective(model, records, "importance", samples=5000, seed=2)
    assert laplace.converged and objective(model, records, "focei").converged
    assert abs(sampled.value - laplace.value) < 1.0, (sampled.value, sampled.standard_error, laplace.value)
