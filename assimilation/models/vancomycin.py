"""Vancomycin, IV: Goti et al. (2018) two-compartment model + an interstitial-fluid biosensor.

Source: Goti V, Chaturvedula A, Fossler MJ, Mok S, Jacob JT. Hospitalized patients with and
without hemodialysis have markedly different vancomycin pharmacokinetics: a population
pharmacokinetic model-based analysis. Ther Drug Monit 2018;40(2):212-221, final-model
parameter table (Table 2). Values cross-checked against two independent public
transcriptions: nlmixr2lib's ``Goti_2018_vancomycin`` (every value traced to a Table 2 row:
CL 4.5, Vc 58.4, Vp 38.4, Q 6.5, CrCL exponent 0.8, dialysis factors 0.7 on CL and 0.5 on Vc,
IIV CV 39.8 / 81.6 / 57.1 %, residual 3.4 mg/L + 22.7 %) and an mrgsolve transcription
(Ω 0.147 / 0.5103 / 0.2822, σ 3.4 mg/L additive). One point where they differ: nlmixr2lib
scales Vp by WT/70 too (reading the Methods' "volume parameters were normalized to a 70-kg
individual"), the mrgsolve one does not; Table 2's covariate row names WT on Vc only, and
this file follows it (V2 fixed).

CrCL as Goti computed it (Methods, via nlmixr2lib's notes): Cockcroft-Gault, values above
150 mL/min truncated to 150, and for patients over 60 years a
serum creatinine below 1 mg/dL raised to 1 mg/dL first. The model takes ``CRCL`` as given;
a caller that wants Goti's covariate applies those rules.

Structure (time h, amounts mg, volumes L, clearances L/h)::

    CL = 4.5 · (CrCL/120)^0.8 · 0.7^DIAL      V1 = 58.4 · (WT/70) · 0.5^DIAL
    Q  = 6.5                                  V2 = 38.4
    dA1/dt = −(CL + Q)/V1 · A1 + Q/V2 · A2 + infusion        (central)
    dA2/dt =   Q/V1 · A1 − Q/V2 · A2                          (peripheral)
    dCi/dt =   keo · (A1/V1 − Ci)                             (interstitial fluid, mg/L)
    dg/dt  = − kdrift · g,   g(0) = 1                         (ISF sensor gain, –)

Covariates: ``CRCL`` creatinine clearance (Cockcroft-Gault, mL/min), ``WT`` total body
weight (kg), ``DIAL`` 1 on intermittent haemodialysis else 0.

| parameter | typical | unit | IIV (ω², log scale) | source |
|---|---|---|---|---|
| CL | 4.5 (CrCL 120 mL/min, exponent 0.8; ×0.7 on dialysis) | L/h | 0.147 (CV 39.8 %) | Goti 2018 Table 2 |
| V1 | 58.4 (70 kg, linear in WT; ×0.5 on dialysis) | L | 0.5103 (CV 81.6 %) | Goti 2018 Table 2 |
| Q | 6.5 | L/h | — | Goti 2018 Table 2 |
| V2 | 38.4 | L | 0.2822 (CV 57.1 %) | Goti 2018 Table 2 |
| plasma error (used) | 0.5 mg/L additive + 10 % proportional | | | assumption (below) |
| plasma residual (published, :data:`GOTI_RESIDUAL_ERROR`) | 3.4 mg/L additive + 22.7 % proportional (the mrgsolve transcription has σ² 0.0502, i.e. 22.4 %) | | | Goti 2018 Table 2 |
| keo | 4.0 (t½ 10 min, time constant 15 min) | 1/h | 0.25 | assumption (below) |
| R_isf | 1.0 | – | — (fixed) | assumption (below) |
| bias | 1.0 | – | 0.01 (CV 10 %) | assumption (below) |
| kdrift | 0.00125 (3 %/day) | 1/h | 0.25 (CV ≈ 50 %) | assumption (below) |

The plasma level's error is the point-of-care meter's, not Goti's residual. Goti's residual
was estimated on routine hospital TDM data, where it also absorbs errors in the recorded dose
and sample times; a connected system takes dose times from the pump and sample times from the
meter, which leaves the meter's own error (the simulators' meter, 0.3 mg/L + 8 %, is itself an
assumption of the order of a laboratory immunoassay, device_simulators/poc_meter.py) and the
structural misfit: 0.5 mg/L + 10 % for both together is an ASSUMPTION. It was chosen on the
closed-loop benchmark (docs/BENCHMARKS.md, "Closed loop"): under Goti's residual (about
4.8 mg/L at a 15 mg/L trough) a daily level barely informs the ISF sensor's calibration gain,
which then stays at its prior and passes into the dose; the tighter error kept every
model-based arm better also when the true CL changed from day to day (within-patient
variability that the published residual would cover). Replace it with the residual of your
own assay and workflow; :data:`GOTI_RESIDUAL_ERROR` is the published one.

The interstitial-fluid (ISF) biosensor (microneedle, aptamer type: a reading every few minutes)
is an *effect compartment*: it takes no drug mass from plasma and follows the plasma
concentration with first-order equilibration rate keo. Its reading is
``R_isf · bias · g(t) · Ci``, with g the sensor's gain: 1 at insertion, decaying at the
sensor's own rate kdrift (g is a state, "sensor_gain", which starts at 1 at model time zero:
``Model.initial_amounts``). Assumptions, stated as such because no population estimate exists:

* keo — plasma→dermal-ISF equilibration of a small hydrophilic molecule; the 15 min time
  constant is an assumption of the same order as the 5–15 min plasma→ISF lag of glucose
  CGMs, and matches the simulator default (device_simulators/biosensor.py). Microneedle
  aptamer sensors for vancomycin have so far been characterised in animals (Lin S et al.,
  Wearable microneedle-based electrochemical aptamer biosensing for precision dosing of drugs
  with narrow therapeutic windows, Sci Adv 2022, doi:10.1126/sciadv.abq4539: ISF and blood
  levels strongly correlated in animals), not as a population.
* R_isf — the steady-state ISF/plasma ratio. Tissue microdialysis under continuous infusion
  gave median tissue/plasma concentration ratios well below 1 (0.3 in non-diabetic and 0.1
  in diabetic cardiac-surgery patients, soft tissue; Skhirtladze K et al., Antimicrob Agents
  Chemother 2006;50(4):1372-1375), but a sensor calibrated against a plasma level at insertion
  reports plasma-equivalent values, so the ratio is fixed at 1 and all between-sensor
  differences go into ``bias``.
* bias — multiplicative calibration error of the sensor, log-normal, CV 10 %: a
  patient/sensor-level parameter the filter learns, mostly from simultaneous plasma levels.
* drift — the signal of an aptamer sensor decays as it ages in tissue (fouling, loss of the
  probe monolayer): uncorrected, fast (a DNA-aptamer sensor in a rat's jugular vein lost 48 %
  of its signal in 5 h, Leung KK et al., Angew Chem Int Ed 2024, doi:10.1002/anie.202316678;
  seen quoted, verify), and drift correction brings it to a few percent over hours (Li H et
  al., J Am Chem Soc 2016;138:15809-15812: from up to 50 % to under 2 %). What a corrected
  wearable keeps is modelled as a first-order decay of the gain, g = exp(−kdrift · t), about
  linear over a sensor's days of wear; typical 3 %/day (the simulator's default,
  device_simulators/biosensor.py) with CV ≈ 50 % between sensors (log-normal: the gain decays,
  never grows). Both are ASSUMPTIONS; the filter learns each sensor's kdrift, like its bias,
  mostly from simultaneous plasma levels (tests/models/test_vancomycin.py checks the filters'
  posterior against the exact one). The sensor is taken to be inserted at model time zero
  (the patient's origin in the service); a sensor changed mid-course is not modelled (its gain
  and bias would need to restart: an event the engine does not have).
* ISF error 1 mg/L + 15 % — the sensor's noise with the part of its calibration error that
  neither bias nor drift explains (an assumption, wider than the simulated sensor's 5 %).
* persistence of the sensor's errors, 2 h — calibration gain, offset, residual drift and,
  under a misspecified structural model, the misfit of the curve's shape are the same from
  one 5-minute reading to the next, so the readings are not independent given the state.
  Each ISF reading is weighted by min(1, Δt / 2 h) (``Analyte.persistence_h``): a day of
  readings carries the information of 12. An assumption chosen on the closed-loop benchmark
  (benchmarks/closedloop.py, docs/BENCHMARKS.md): assimilating every 15-min median unweighted
  left 12 % of patients above AUC 600 on day 3 under a misspecified truth, one value per 2 h
  5 %; no sensor study measures this autocorrelation yet.

Target: AUC24 400–600 mg·h/L (assuming MIC 1 mg/L), Rybak MJ et al., Therapeutic monitoring
of vancomycin for serious MRSA infections: a revised consensus guideline (ASHP, IDSA, PIDS,
SIDP). Am J Health Syst Pharm 2020;77(11):835-864.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import (
    Analyte, Categorical, CategoricalEffect, Combined, Continuous, LinearCompartments, Model, Population, PowerEffect, Sensor,
)
from assimilation.models import exposure
from assimilation.structure import Modes, modes

DRUG = "vancomycin"

SENSOR_ERROR_PERSISTENCE_H = 2.0
"""How long the ISF sensor's errors persist, h (ASSUMPTION, see the module doc): readings
closer together than this share their information (``Analyte.persistence_h``)."""

GOTI_RESIDUAL_ERROR = Combined(3.4, 0.227)
"""Goti 2018's plasma residual error (Table 2): hospital TDM, with charting errors included."""

POINT_OF_CARE_ERROR = Combined(0.5, 0.10)
"""Plasma level from a connected point-of-care meter, meter + structural misfit (ASSUMPTION, module doc)."""

PARAMETER_UNITS = (("CL", "L/h"), ("V1", "L"), ("Q", "L/h"), ("V2", "L"), ("keo", "/h"), ("R_isf", "1"), ("bias", "1"), ("kdrift", "/h"))

SENSOR_NAMES = ("keo", "R_isf", "bias", "kdrift")
SENSOR_TYPICAL = (4.0, 1.0, 1.0, 0.03 / 24.0)
SENSOR_OMEGA = (0.25, 0.0, 0.01, 0.25)
"""The ISF biosensor's parameters, typical values (1/h, –, –, 1/h) and ω² (ASSUMPTIONS, module
doc); shared with :mod:`.vancomycin_thomson`, whose sensor is the same."""

COMPARTMENTS = ("central", "peripheral", "isf", "sensor_gain")
START = (0.0, 0.0, 0.0, 1.0)
"""State at model time zero: no drug, and a sensor inserted then with its full gain."""

ISF_SENSOR = Sensor(states=("sensor_gain",), parameters=("bias", "kdrift"))
"""What a new ISF sensor restarts (``SensorChange``): its gain at 1, its own calibration bias
and drift rate drawn from the prior. keo and R_isf belong to the patient's skin, not the sensor."""

CRCL = Continuous("CRCL", "mL/min", 1.0, 300.0, "creatinine clearance, Cockcroft-Gault (Goti: truncated at 150 mL/min; "
                  "serum creatinine floored at 1 mg/dL over 60 y)")
WT = Continuous("WT", "kg", 30.0, 300.0, "total body weight")
DIAL = Categorical("DIAL", (0, 1), "1 on intermittent haemodialysis, else 0")
COVARIATE_TYPES = (CRCL, WT, DIAL)
"""The bounds are plausibility limits for an adult record (ASSUMPTION: a value outside is taken
for a data-entry error), not the range of Goti's data."""

population = Population(
    names=("CL", "V1", "Q", "V2") + SENSOR_NAMES,
    typical=np.array([4.5, 58.4, 6.5, 38.4, *SENSOR_TYPICAL]),
    omega=np.diag([0.147, 0.5103, 0.0, 0.2822, *SENSOR_OMEGA]),
    effects=(
        PowerEffect("CL", "CRCL", 120.0, 0.8),
        CategoricalEffect("CL", "DIAL", ((1, 0.7),)),
        PowerEffect("V1", "WT", 70.0, 1.0),
        CategoricalEffect("V1", "DIAL", ((1, 0.5),)),
    ),
)


def rate_matrix(p):
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    keo, kdrift = p["keo"], p["kdrift"]
    return jnp.array([
        [-(k10 + k12), k21, 0.0, 0.0],
        [k12, -k21, 0.0, 0.0],
        [keo / p["V1"], 0.0, -keo, 0.0],
        [0.0, 0.0, 0.0, -kdrift],
    ])


class PlasmaWithEffectCompartment(LinearCompartments):
    """The rate matrix above, diagonalised in closed form: faster than a general eigensolver
    on CPU, and ``jnp.linalg.eig`` has historically been CPU-only in JAX.

    K = [[B, 0, 0], [keo/V1 · e1ᵀ, −keo, 0], [0, 0, −kdrift]]: the sensor gain is uncoupled,
    and the rest is block lower-triangular, so the rates are those of the 2×2 plasma block B
    (with eigenvectors u), −keo and −kdrift. An eigenvector of a plasma rate λ is
    (u, keo·u0 / (V1 (λ + keo)), 0); that of −keo is e3, that of −kdrift e4. Needs λ ≠ −keo
    (true except on a set of measure zero of the parameters; |λ + keo| is floored at 1e-6 /h
    to stay finite).
    """

    def prepare(self, params):
        K = self.rate_matrix(params)
        plasma = modes(K[:2, :2])  # closed form for 2×2
        keo = params["keo"]
        gap = plasma.rates + keo
        gap = jnp.where(jnp.abs(gap) < 1e-6, jnp.where(gap < 0, -1e-6, 1e-6), gap)
        isf = keo / params["V1"] * plasma.vectors[0] / gap
        identity = jnp.eye(4, dtype=K.dtype)
        vectors = identity.at[:2, :2].set(plasma.vectors).at[2, :2].set(isf)
        # inverse of [[U, 0], [w, 1]] is [[U⁻¹, 0], [−w U⁻¹, 1]]; the gain's row and column are e4
        inverse = identity.at[:2, :2].set(plasma.inverse).at[2, :2].set(-isf @ plasma.inverse)
        return Modes(jnp.stack([plasma.rates[0], plasma.rates[1], -keo, -params["kdrift"]]), vectors, inverse)


def plasma_concentration(p, x):
    """Serum/plasma vancomycin, mg/L."""
    return x[0] / p["V1"]


def isf_reading(p, x):
    """Expected biosensor reading, mg/L (plasma-equivalent after calibration): the ISF level
    times the sensor's calibration bias and its gain, which decays from 1 at insertion."""
    return p["R_isf"] * p["bias"] * x[3] * x[2]


model = Model(
    name="vancomycin",
    population=population,
    dynamics=PlasmaWithEffectCompartment(4, rate_matrix, cache_modes=False),  # closed form: recomputed, not stored
    compartments=COMPARTMENTS,
    analytes=(
        Analyte("plasma", plasma_concentration, POINT_OF_CARE_ERROR, lloq=2.0, unit="mg/L", code="20578-1"),
        Analyte("isf", isf_reading, Combined(1.0, 0.15), lloq=1.0, unit="mg/L", code="x-mipd-vancomycin-isf",
                persistence_h=SENSOR_ERROR_PERSISTENCE_H, sensor=ISF_SENSOR),
    ),
    dose_compartment=0,
    initial_amounts=START,
    covariates=COVARIATE_TYPES,
    parameter_units=PARAMETER_UNITS,
)

# --------------------------------------------------------------- metadata (not in the Model API)

ANALYTE_CODES = {analyte.name: analyte.code for analyte in model.analytes}
"""Analyte name in this model -> wire code (wire/analytes.py); canonical unit mg/L for both."""

COVARIATES = {c.name: c.description for c in model.covariates}

TARGETS = {"auc24": (400.0, 600.0)}
"""mg·h/L, Rybak et al. 2020 (ASHP/IDSA/PIDS/SIDP consensus), MIC 1 mg/L assumed."""

def auc24(times, plasma, day_start):
    """AUC of the plasma concentration over [day_start, day_start + 24 h], mg·h/L."""
    return exposure.auc24(times, plasma, day_start)


def trough(times, plasma, dose_time):
    """Plasma concentration just before the dose at ``dose_time``, mg/L."""
    return exposure.trough(times, plasma, dose_time)


def peak(times, plasma, start, end):
    """Highest plasma concentration in [start, end] (the end of an infusion), mg/L."""
    return exposure.peak(times, plasma, start, end)


def in_target(auc):
    """True where an AUC24 lies in the consensus range."""
    low, high = TARGETS["auc24"]
    return (auc >= low) & (auc <= high)


METRICS = {"auc24": auc24, "trough": trough, "peak": peak}
