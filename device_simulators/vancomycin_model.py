"""Built-in truth model: vancomycin, one compartment, IV infusions, closed form.

Numbers and their sources:
- covariates (age, sex, weight, serum creatinine, Cockcroft-Gault CrCl) from
  `device_simulators.covariates`;
- vancomycin clearance and volume by Matzke et al., Antimicrob Agents Chemother
  1984;25:433-437: CL [mL/min] = 0.689 * CrCl [mL/min] + 3.66, V = 0.72 L/kg;
- regimen 15 mg/kg every 12 h, infused no faster than 1000 mg/h (at least 1 h), from
  the vancomycin consensus guideline, Rybak et al., Am J Health-Syst Pharm 2009;66:82-98.
The between-patient variability (log-normal, 25 % CV on CL and 15 % on V) is this
simulator's assumption for a plausible ward, not
values from those papers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from device_simulators.covariates import sample_ward_patient
from device_simulators.dosing import AdministeredDose, ScheduledDose, every


@dataclass(frozen=True)
class OneCompartmentVancomycin:
    name: str = "vancomycin-1cmt"
    drug: str = "vancomycin"
    route: str = "iv_infusion"
    plasma_analyte: str = "20578-1"
    analytes: tuple[str, ...] = ("20578-1", "2160-0")
    cl_cv: float = 0.25
    """Between-patient CV of clearance (log-normal)."""
    v_cv: float = 0.15
    """Between-patient CV of volume (log-normal)."""
    dose_mg_per_kg: float = 15.0
    interval_h: float = 12.0
    max_rate_mg_per_h: float = 1000.0

    def sample_covariates(self, rng: np.random.Generator) -> dict[str, float | str]:
        return sample_ward_patient(rng)

    def sample_parameters(self, covariates: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
        crcl = covariates["crcl_ml_min"]
        cl_typical_l_h = (0.689 * crcl + 3.66) * 60.0 / 1000.0
        v_typical_l = 0.72 * covariates["weight_kg"]
        cl = cl_typical_l_h * np.exp(rng.normal(0.0, np.sqrt(np.log1p(self.cl_cv**2))))
        v = v_typical_l * np.exp(rng.normal(0.0, np.sqrt(np.log1p(self.v_cv**2))))
        return {"cl_l_h": float(cl), "v_l": float(v), "crcl_ml_min": float(crcl)}

    def regimen(self, covariates: Mapping[str, float], start_t: float, end_t: float) -> list[ScheduledDose]:
        # rounded to 250 mg, as a pharmacy would
        amount = max(250.0, round(self.dose_mg_per_kg * covariates["weight_kg"] / 250.0) * 250.0)
        duration_s = max(1.0, amount / self.max_rate_mg_per_h) * 3600.0
        return every(start_t, self.interval_h * 3600.0, end_t, self.drug, amount, "iv_infusion", duration_s)

    def trajectories(
        self,
        parameters: Mapping[str, float],
        covariates: Mapping[str, float],
        doses: Sequence[AdministeredDose],
        times: np.ndarray,
    ) -> dict[str, np.ndarray]:
        times = np.asarray(times, dtype=float)
        return {
            "20578-1": infusion_concentration(parameters["cl_l_h"], parameters["v_l"], doses, times),
            "2160-0": np.full(times.shape, covariates["scr_mg_dl"]),
        }


def infusion_concentration(cl_l_h: float, v_l: float, doses: Sequence[AdministeredDose], times: np.ndarray) -> np.ndarray:
    """Plasma concentration (mg/L) of a 1-compartment model by superposition of zero-order infusions."""
    k = cl_l_h / v_l  # 1/h
    conc = np.zeros_like(times, dtype=float)
    for dose in doses:
        if not dose.given:
            continue
        dur_h = max(dose.duration_s, 1.0) / 3600.0
        rate = dose.amount_mg / dur_h  # mg/h
        since_h = (times - dose.t) / 3600.0
        during = (since_h > 0) & (since_h <= dur_h)
        after = since_h > dur_h
        conc[during] += rate / cl_l_h * (1.0 - np.exp(-k * since_h[during]))
        conc[after] += rate / cl_l_h * (1.0 - np.exp(-k * dur_h)) * np.exp(-k * (since_h[after] - dur_h))
    return conc
