"""Remifentanil (Minto 1997): three compartments, typical values additive in age and lean body mass.

A published model written as a model file, an example of covariate expressions; it is not
offered to clinicians (files in this folder are not in the service's model list; it loads by
path: ``load_model("assimilation/models/examples/minto_remifentanil.py")``).

Source: Minto CF, Schnider TW, Egan TD, et al. Influence of age and gender on the
pharmacokinetics and pharmacodynamics of remifentanil. I. Model development. Anesthesiology
1997;86(1):10-23 (65 healthy adults, 20-85 years, NONMEM; doi:10.1097/00000542-199701000-00004).
The typical values below are as transcribed by the PyTCI and open-TIVA target-controlled
infusion libraries, which agree; verify against the paper's Table 3 before any use. The
published equations, in L and L/min (AGE in years, LBM lean body mass in kg, James formula)::

    V1 = 5.1  − 0.0201 (AGE − 40) + 0.072 (LBM − 55)
    V2 = 9.82 − 0.0811 (AGE − 40) + 0.108 (LBM − 55)
    V3 = 5.42
    CL = 2.6  − 0.0162 (AGE − 40) + 0.0191 (LBM − 55)
    Q2 = 2.05 − 0.0301 (AGE − 40)
    Q3 = 0.076 − 0.00113 (AGE − 40)

Clearances are converted to L/h (× 60): model time is in hours. Doses in µg, concentration
in µg/L (= ng/mL). Not transcribed: the between-subject variability and the residual error.
The Ω (ω² = 0.1 on every parameter) and the 20 % proportional error below are ASSUMED, for
illustration only. The effect compartment (ke0) is left out: this file is the PK part.
"""

import numpy as np

from assimilation import Analyte, Continuous, LinearCompartments, Model, Population, Proportional
from assimilation.structure import mammillary

MIN_PER_H = 60.0

population = Population.of(
    {
        "CL": lambda AGE, LBM: MIN_PER_H * (2.6 - 0.0162 * (AGE - 40) + 0.0191 * (LBM - 55)),
        "V1": lambda AGE, LBM: 5.1 - 0.0201 * (AGE - 40) + 0.072 * (LBM - 55),
        "Q2": lambda AGE: MIN_PER_H * (2.05 - 0.0301 * (AGE - 40)),
        "V2": lambda AGE, LBM: 9.82 - 0.0811 * (AGE - 40) + 0.108 * (LBM - 55),
        "Q3": lambda AGE: MIN_PER_H * (0.076 - 0.00113 * (AGE - 40)),
        "V3": 5.42,
    },
    omega=np.diag([0.1] * 6),  # ASSUMED (see above)
    reference={"AGE": 40.0, "LBM": 55.0},  # the centring values of the published equations
)

model = Model(
    name="minto_remifentanil",
    population=population,
    dynamics=LinearCompartments(3, mammillary("CL", "V1", [("Q2", "V2"), ("Q3", "V3")])),
    compartments=("central", "peripheral_fast", "peripheral_slow"),
    analytes=(Analyte("remifentanil", lambda p, x: x[0] / p["V1"], Proportional(0.2), unit="ug/L"),),  # error ASSUMED
    covariates=(
        Continuous("AGE", "a", 12.0, 100.0, "age", studied=(20.0, 85.0)),
        Continuous("LBM", "kg", 20.0, 120.0, "lean body mass (James formula)"),
    ),
)
