"""Covariates of a virtual ward patient, drawn from stated distributions.

One draw gives a coherent patient (creatinine clearance follows from age, sex, weight and
serum creatinine), exposed under the simulator's names (units in the name) and under the
short names that `assimilation` library models use in their covariate effects (WT, CRCL, ...).

Distributions (all ASSUMPTIONS for a plausible adult general ward, not fitted to data):
- sex: female with probability 0.5;
- age: normal(60, 15) years, clipped to 18..95;
- weight: normal(70 kg women / 82 kg men, SD 14), clipped to 40..160 kg;
- serum creatinine: log-normal, median 1.0 mg/dL, log-SD 0.35, clipped to 0.4..4.0 mg/dL;
- creatinine clearance by Cockcroft & Gault, Nephron 1976;16:31-41:
  CrCl [mL/min] = (140 - age) * weight [kg] / (72 * SCr [mg/dL]), times 0.85 for women;
- genotypes (for warfarin-type models), approximate European frequencies, ASSUMPTION
  rounded from the CPIC warfarin guideline's tables (Johnson et al., Clin Pharmacol Ther
  2017;102:397-404): CYP2C9 *1/*1 0.65, *1/*2 0.20, *1/*3 0.10, *2/*2 0.02, *2/*3 0.02,
  *3/*3 0.01; VKORC1 -1639 G/G 0.37, G/A 0.47, A/A 0.16;
- no patient is on haemodialysis (DIAL = 0): an ASSUMPTION of this ward, whose creatinine
  clearance comes from Cockcroft-Gault, meaningless on dialysis.
"""

from __future__ import annotations

import numpy as np

CYP2C9 = {"*1/*1": 0.65, "*1/*2": 0.20, "*1/*3": 0.10, "*2/*2": 0.02, "*2/*3": 0.02, "*3/*3": 0.01}
VKORC1 = {"G/G": 0.37, "G/A": 0.47, "A/A": 0.16}


def cockcroft_gault_ml_min(age_y: float, weight_kg: float, scr_mg_dl: float, female: bool) -> float:
    """Creatinine clearance, mL/min (Cockcroft & Gault 1976)."""
    crcl = (140.0 - age_y) * weight_kg / (72.0 * scr_mg_dl)
    return crcl * (0.85 if female else 1.0)


def _categorical(rng: np.random.Generator, frequencies: dict[str, float]) -> str:
    levels = list(frequencies)
    p = np.array([frequencies[k] for k in levels])
    return levels[int(rng.choice(len(levels), p=p / p.sum()))]


def sample_ward_patient(rng: np.random.Generator) -> dict[str, float | str]:
    """One patient's covariates; numeric ones are floats, genotypes strings."""
    female = bool(rng.random() < 0.5)
    age = float(np.clip(rng.normal(60.0, 15.0), 18.0, 95.0))
    weight = float(np.clip(rng.normal(70.0 if female else 82.0, 14.0), 40.0, 160.0))
    scr = float(np.clip(rng.lognormal(np.log(1.0), 0.35), 0.4, 4.0))
    crcl = cockcroft_gault_ml_min(age, weight, scr, female)
    cyp2c9 = _categorical(rng, CYP2C9)
    vkorc1 = _categorical(rng, VKORC1)
    return {
        "age_y": age, "weight_kg": weight, "female": float(female), "scr_mg_dl": scr, "crcl_ml_min": crcl,
        "cyp2c9": cyp2c9, "vkorc1": vkorc1,
        # the short names of the model library's covariate effects
        "AGE": age, "WT": weight, "SEX": float(female), "CRCL": crcl, "SCR": scr,
        "CYP2C9": cyp2c9, "VKORC1": vkorc1, "DIAL": 0.0,
    }
