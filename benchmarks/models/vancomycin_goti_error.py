"""The library's `vancomycin` with Goti 2018's published plasma residual error instead of the
point-of-care error it uses, for the closed-loop benchmark's `--controller` (a comparison,
not a library model).

Goti's residual, additive 3.4 mg/L plus 22.7 % proportional (Table 2), was estimated on
routine hospital TDM data and also absorbs errors in recorded dose and sampling times; the
library assumes 0.5 mg/L + 10 % for a connected meter (assimilation/models/vancomycin.py).
Running the benchmark with this controller shows what that assumption changes
(docs/BENCHMARKS.md, closed loop).
"""

import dataclasses

from assimilation.models.vancomycin import GOTI_RESIDUAL_ERROR
from assimilation.models.vancomycin import model as library

plasma, isf = library.analytes
model = dataclasses.replace(library, name="vancomycin-goti-error", analytes=(dataclasses.replace(plasma, error=GOTI_RESIDUAL_ERROR), isf))
