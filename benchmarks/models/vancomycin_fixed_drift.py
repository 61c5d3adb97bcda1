"""The library's `vancomycin` with every sensor's drift fixed at the typical 3 %/day (no
between-sensor variability of kdrift), for the closed-loop benchmark's `--controller`: what
the filter gains by learning each sensor's drift (a comparison, not a library model).
`MIPD_DRIFT_PER_DAY=0` fixes it at zero instead: a controller that ignores drift."""

import dataclasses
import os

from assimilation.models.vancomycin import model as library

population = library.population
kdrift = population.index("kdrift")
per_day = float(os.environ.get("MIPD_DRIFT_PER_DAY", "0.03"))
typical = population.typical.copy()
typical[kdrift] = max(per_day, 1e-9) / 24.0  # log-normal: a zero rate as a negligible one
omega = population.omega.copy()
omega[kdrift, kdrift] = 0.0
model = dataclasses.replace(library, name=f"vancomycin-drift-{per_day:g}", population=population._replace(typical=typical, omega=omega))
