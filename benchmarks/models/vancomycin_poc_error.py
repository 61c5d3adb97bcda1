"""Goti 2018 vancomycin (the library's `vancomycin`) with a point-of-care error model for plasma
levels, for the closed-loop benchmark's `--controller` (an experiment, not a library model).

The library keeps Goti's published residual error for plasma levels, additive 3.4 mg/L plus
22.7 % proportional: estimated on routine hospital TDM data, it also absorbs errors in
recorded dose and sampling times. A connected system takes dose times from the pump and
sample times from the meter, which leaves the meter's own error (the simulators' meter:
0.3 mg/L + 8 %, an assumption, device_simulators/poc_meter.py) and the structural misfit.
This variant assumes 0.5 mg/L + 10 % for both together (ASSUMPTION). Under Goti's residual
a daily level barely informs the interstitial sensor's calibration gain (`bias`), which then
stays at its prior and carries straight into the dose (docs/BENCHMARKS.md, closed loop).
"""

import dataclasses

from assimilation import Combined
from assimilation.models.vancomycin import model as goti

plasma, isf = goti.analytes
model = dataclasses.replace(goti, name="vancomycin-poc-error", analytes=(dataclasses.replace(plasma, error=Combined(0.5, 0.10)), isf))
