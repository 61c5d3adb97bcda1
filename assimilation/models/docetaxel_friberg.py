"""Docetaxel PK + Friberg semi-mechanistic myelosuppression, observed by an ANC meter.

Myelosuppression: the Friberg model (Friberg LE, Henningsson A, Maas H, Nguyen L, Karlsson
MO. J Clin Oncol 2002;20(24):4713-4721: a proliferating pool, three transit compartments,
circulating neutrophils, feedback (Circ0/Circ)^γ) with the docetaxel parameters of Kloft C,
Wallin J, Henningsson A, Chatelut E, Karlsson MO. Population pharmacokinetic-pharmacodynamic
model for neutropenia with patient subgroup identification: comparison across anticancer
drugs. Clin Cancer Res 2006;12(18):5481-5490 (docetaxel arm): a linear drug effect
E = SL · C. Values as published in the DDMoRe model repository, DDMODEL00000224 (the NM-TRAN
control stream of Netterberg I et al., Cancer Chemother Pharmacol 2017;80:343-353, which
fixes every parameter at Kloft 2006's estimate), read from nlmixr2lib's transcription
``Netterberg_2017_docetaxel``, which traces each value to the control stream's $THETA/$OMEGA.

Why Kloft 2006 and not Friberg 2002's docetaxel row (Emax 83.9, EC50 7.17 µmol/L, Circ0
5.05, MTT 89.3 h, γ 0.163, as transcribed in D. C. Norris's DTAT package): with this PK,
Friberg's row gives a typical nadir of 0.82 × 10^9/L and 31 % grade 4 at 100 mg/m², against
~75 % in the Taxotere label; Kloft's gives 0.13 and 84 %
(benchmarks/docetaxel_pk.py, docs/MODELS.md). A PK built from the label alone moved neither.

PK: two-compartment docetaxel model of Onoue H et al. Significant effect of age on docetaxel
pharmacokinetics in Japanese female breast cancer patients by using the population modeling
approach. Eur J Clin Pharmacol 2016;72(6):703-710, Table 2 (as transcribed in the DTAT
package; Onoue's age effect on CL is not included here). Kloft drove the PD with individual
predictions from an earlier docetaxel PK model; the Onoue PK is a substitute.

Structure (time h, amounts mg, volumes L; C in µmol/L with M = 807.88 g/mol)::

    dA1/dt = −(CL + Q)/V1 · A1 + Q/V2 · A2 + infusion,  dA2/dt = Q/V1 · A1 − Q/V2 · A2
    E      = SL · C,                          C = A1/V1 · 1000/M
    dProl/dt = ktr · Prol · ((1 − E)(Circ0/Circ)^γ − 1),        ktr = 4/MTT
    dT1/dt = ktr (Prol − T1),  dT2/dt = ktr (T1 − T2),  dT3/dt = ktr (T2 − T3)
    dCirc/dt = ktr (T3 − Circ)

The engine starts every state at zero, so the cell states are stored as *relative deviations
from baseline*, p = Prol/Circ0 − 1 etc.; zero is the pre-treatment steady state
(Prol = T1 = T2 = T3 = Circ = Circ0) and ANC = Circ0 · (1 + c).

| parameter | typical | unit | IIV (ω², log scale) | source |
|---|---|---|---|---|
| CL | 32.6 | L/h | 0.087 (SD 0.295) | Onoue 2016 Table 2 |
| V1 | 5.77 | L | 0.01 (not reported; DTAT's assumption) | Onoue 2016 Table 2 |
| Q | 5.34 | L/h | 0.304 (SD 0.551) | Onoue 2016 Table 2 |
| V2 | 11.0 | L | 0.358 (SD 0.598) | Onoue 2016 Table 2 |
| Circ0 | 5.22 | 10^9/L | 0.0640 | Kloft 2006 (DDMODEL00000224 THETA 1, OMEGA 1) |
| MTT | 84.2 | h | 0.0192 | Kloft 2006 (THETA 2, OMEGA 2) |
| γ | 0.1445 | – | 0.0216 | Kloft 2006 (THETA 4; the repository fixes its ω² at 0, the publication's 0.0216 is used here) |
| SL | 15.57 | L/µmol | 0.128 | Kloft 2006 (THETA 3, OMEGA 3) |
| ANC residual | 0.2 on the log scale | | | assumption: point-of-care meter CV + model error (Kloft's residual, fitted to hospital data with the model's misfit, is 0.424) |

Kloft 2006 also has covariates (sex, ECOG status, prior therapy and α1-acid glycoprotein on
Circ0; AAG on SL); they are not in this model: the typical values are those of its reference
patient (male, ECOG 0, no prior therapy, AAG 1.34 g/L), and a patient's own pre-treatment ANC
reading informs Circ0.

Targets: CTCAE v5.0 neutropenia grades (grade 4: ANC < 0.5 × 10^9/L); metrics: nadir, time
to nadir, probability of grade 4 in the cycle.
"""

import jax.numpy as jnp
import numpy as np

from assimilation import Analyte, LogNormal, Model, OdeCompartments, Population
from assimilation.models import exposure

DRUG = "docetaxel"
MOLAR_MASS = 807.88
"""g/mol, docetaxel (anhydrous), so mg/L · 1000/M = µmol/L."""

_OMEGA = {"CL": 0.295**2, "V1": 0.1**2, "Q": 0.551**2, "V2": 0.598**2,  # Onoue 2016 (SDs of the log)
          "Circ0": 0.0639703, "MTT": 0.0191785, "gamma": 0.0216452, "SL": 0.128412}  # Kloft 2006

population = Population(
    names=("CL", "V1", "Q", "V2", "Circ0", "MTT", "gamma", "SL"),
    typical=np.array([32.6, 5.77, 5.34, 11.0, 5.21965, 84.1791, 0.144543, 15.5711]),
    omega=np.diag(list(_OMEGA.values())),
)


def drug_effect(p, central_amount):
    """E = SL·C with C the plasma concentration in µmol/L (Kloft 2006: linear, no ceiling;
    E > 1 at peak concentrations, when the proliferating pool shrinks)."""
    c = jnp.maximum(central_amount, 0.0) / p["V1"] * (1000.0 / MOLAR_MASS)
    return p["SL"] * c


def vector_field(t, x, p):
    central, peripheral = x[0], x[1]
    prol, t1, t2, t3, circ = 1.0 + x[2], x[3], x[4], x[5], x[6]
    ktr = 4.0 / p["MTT"]
    k10, k12, k21 = p["CL"] / p["V1"], p["Q"] / p["V1"], p["Q"] / p["V2"]
    feedback = jnp.maximum(1.0 + circ, 1e-6) ** (-p["gamma"])
    return jnp.stack([
        -(k10 + k12) * central + k21 * peripheral,
        k12 * central - k21 * peripheral,
        ktr * prol * ((1.0 - drug_effect(p, central)) * feedback - 1.0),
        ktr * (x[2] - t1),
        ktr * (t1 - t2),
        ktr * (t2 - t3),
        ktr * (t3 - circ),
    ])


def neutrophil_count(p, x):
    """ANC in 10^9/L."""
    return p["Circ0"] * jnp.maximum(1.0 + x[6], 1e-6)


model = Model(
    name="docetaxel_friberg",
    population=population,
    dynamics=OdeCompartments(7, vector_field, rtol=1e-5, atol=1e-7),
    compartments=("central", "peripheral", "proliferating", "transit1", "transit2", "transit3", "circulating"),
    analytes=(Analyte("anc", neutrophil_count, LogNormal(0.2), unit="10*9/L", code="751-8"),),
    dose_compartment=0,
    parameter_units=(("CL", "L/h"), ("V1", "L"), ("Q", "L/h"), ("V2", "L"), ("Circ0", "10*9/L"), ("MTT", "h"), ("gamma", "1"),
                     ("SL", "L/umol")),
)

# --------------------------------------------------------------- metadata (not in the Model API)

ANALYTE_CODES = {analyte.name: analyte.code for analyte in model.analytes}
"""Analyte name -> wire code (wire/analytes.py); canonical unit 10*9/L."""

COVARIATES: dict = {}
"""None: doses are in mg (the prescriber's mg/m² × body-surface area)."""

GRADE_4_ANC = 0.5
"""10^9/L, CTCAE v5.0 neutrophil count decreased, grade 4."""

TARGETS = {"anc_nadir": (GRADE_4_ANC, np.inf)}
"""Keep the cycle's nadir out of grade 4 (CTCAE v5.0)."""


def nadir(times, anc, start, end):
    return exposure.nadir(times, anc, start, end)


def time_to_nadir(times, anc, dose_time, end):
    """Hours from the dose to the lowest ANC before ``end``."""
    return exposure.time_of_nadir(times, anc, dose_time, end) - dose_time


def probability_grade4(times, anc, start, end, weights=None):
    """P(nadir < 0.5 × 10^9/L) over the particles on the last-but-one axis of ``anc`` (..., N, T)."""
    return exposure.probability(nadir(times, anc, start, end) < GRADE_4_ANC, weights)


def grade(anc):
    return exposure.ctcae_neutropenia_grade(anc)


METRICS = {"nadir": nadir, "time_to_nadir": time_to_nadir, "p_grade4": probability_grade4}
