"""Vancomycin, IV: Roberts et al. (2011), septic critically ill adults — a truth outside the library.

For the closed-loop benchmark's model-averaging arms (benchmarks/closedloop.py): virtual
patients drawn from a published adult model that is NOT one of the averaged library models
(:mod:`assimilation.models.vancomycin`, ``vancomycin_thomson``, ``vancomycin_purwonugroho2012``),
from a population none of them covers: septic ICU patients, whose volume of distribution is
large (1.53 L/kg, about 115 L at 75 kg, against 77-98 L for the library models' totals).
A benchmark model, not a library model.

Source: Roberts JA, Taccone FS, Udy AA, Vincent JL, Jacobs F, Lipman J. Vancomycin dosing in
critically ill patients: robust methods for improved continuous-infusion regimens.
Antimicrob Agents Chemother 2011;55(6):2704-2709, doi:10.1128/AAC.01708-10 (206 patients,
Erasme Hospital, Brussels; NONMEM FOCE-I; Table 2, final covariate model). Values
cross-checked against nlmixr2lib's transcription ``Roberts_2011_vancomycin`` (every value
traced there to Eq. 3-4 and Table 2):

    CL = 4.58 · CrCL / 100   (L/h; CrCL 24-h urinary, mL/min/1.73 m²)     IIV CV 38.9 % → ω² 0.1409
    V  = 1.53 · TBW          (L; total body weight, kg)                     IIV CV 37.4 % → ω² 0.1309
    residual 19.9 % proportional + 2.4 mg/L additive

One compartment: written in the library's state layout (central, peripheral, ISF, sensor gain)
as the limit Q → 0 (Q fixed at 1e-6 L/h, V2 at 1 L: over 72 h less than a millionth of the
drug reaches the peripheral compartment), so that the benchmark simulates it, and its ISF
sensor, exactly as the other truths. The benchmark's patients carry a Cockcroft-Gault CrCL,
not Roberts' BSA-normalised urinary one: the benchmark uses it in its place (an
approximation; the two differ by the ratio of body surface area to 1.73 m² and by the bias of
the estimate). The ISF sensor is the library's assumed one (:mod:`assimilation.models.vancomycin`).
"""

import dataclasses

import numpy as np

from assimilation import Combined, Population, PowerEffect
from assimilation.models import vancomycin

RESIDUAL_ERROR = Combined(2.4, 0.199)
"""Roberts 2011 Table 2 (the benchmark draws its levels from the simulated meter, not from this)."""

population = Population(
    names=("CL", "V1", "Q", "V2") + vancomycin.SENSOR_NAMES,
    typical=np.array([4.58, 1.53 * 70.0, 1e-6, 1.0, *vancomycin.SENSOR_TYPICAL]),
    omega=np.diag([np.log1p(0.389**2), np.log1p(0.374**2), 0.0, 0.0, *vancomycin.SENSOR_OMEGA]),
    effects=(PowerEffect("CL", "CRCL", 100.0, 1.0), PowerEffect("V1", "WT", 70.0, 1.0)),
)

plasma, isf = vancomycin.model.analytes
model = dataclasses.replace(  # the library's structure and sensor; this study's population and residual
    vancomycin.model, name="vancomycin_roberts2011", population=population,
    analytes=(dataclasses.replace(plasma, error=RESIDUAL_ERROR), isf), covariates=(vancomycin.CRCL, vancomycin.WT),
)
