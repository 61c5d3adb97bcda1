"""Truth models drawn from the `assimilation` model library (the filter's own model family).

A library model (`assimilation.load_model(name)`) knows its population (typical values,
covariate effects, between-patient covariance Omega on the log scale) and its dynamics,
but not how it meets the wire: which drug, what regimen, which analyte code each of its
analytes has. A `LibraryBinding` adds exactly that; `LibraryTruthModel` then implements
`device_simulators.truth.TruthModel`.

A patient's parameters are drawn as the model's own prior:
    log theta = log theta_typical + sum of covariate log-effects + L z,   z ~ N(0, I),  L L^T = Omega,
and the latent trajectories are the library's deterministic forward model
(`assimilation.simulate.amounts_at`, `predict_readings`) under the doses really given.
Library time is in hours from an arbitrary origin; here the origin is the earliest time
involved, so that float32 keeps millisecond-level resolution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from device_simulators.covariates import sample_ward_patient
from device_simulators.dosing import AdministeredDose, Route, ScheduledDose, every

Regimen = Callable[[Mapping[str, object], float, float], list[ScheduledDose]]


@dataclass(frozen=True)
class LibraryBinding:
    """What a library model needs to be simulated on the wire."""

    drug: str
    """Drug name on the wire (a key of wire.DRUGS)."""
    route: Route
    regimen: Regimen
    """covariates, start_t, end_t (s since epoch) -> prescribed doses."""
    analyte_codes: Mapping[str, str]
    """Library analyte name (case-insensitive) -> wire analyte code."""
    plasma_analyte: str
    """The wire code the biosensor and the point-of-care meter follow."""
    extra_constant: Mapping[str, str] = field(default_factory=dict)
    """Wire code -> covariate name, for analytes that stay at a covariate's value (creatinine)."""


def vancomycin_q12h(covariates: Mapping[str, object], start_t: float, end_t: float) -> list[ScheduledDose]:
    """15 mg/kg every 12 h rounded to 250 mg, infused at <= 1000 mg/h and over >= 1 h
    (Rybak et al., Am J Health-Syst Pharm 2009;66:82-98)."""
    amount = max(250.0, round(15.0 * float(covariates["weight_kg"]) / 250.0) * 250.0)
    return every(start_t, 12 * 3600.0, end_t, "vancomycin", amount, "iv_infusion", max(1.0, amount / 1000.0) * 3600.0)


def docetaxel_q3w(covariates: Mapping[str, object], start_t: float, end_t: float) -> list[ScheduledDose]:
    """75 mg/m2 over 1 h every 21 days; body surface area by Mosteller with an assumed height
    of 170 cm (ASSUMPTION: the ward patient has no height)."""
    bsa_m2 = np.sqrt(170.0 * float(covariates["weight_kg"]) / 3600.0)
    return every(start_t, 21 * 86400.0, end_t, "docetaxel", round(75.0 * bsa_m2), "iv_infusion", 3600.0)


def warfarin_daily(covariates: Mapping[str, object], start_t: float, end_t: float) -> list[ScheduledDose]:
    """5 mg orally once a day (a common starting dose; ASSUMPTION, no genotype-guided loading)."""
    return every(start_t, 86400.0, end_t, "warfarin", 5.0, "oral")


BINDINGS: dict[str, LibraryBinding] = {
    # Goti et al. 2018 vancomycin parameters (see assimilation/models/two_compartment_infusion.py)
    "two_compartment_infusion": LibraryBinding(
        "vancomycin", "iv_infusion", vancomycin_q12h, {"concentration": "20578-1"}, "20578-1",
        {"2160-0": "scr_mg_dl"},
    ),
    # the library's ISF analyte is not bound: the simulated biosensor derives the interstitial
    # level from plasma itself, with the patient's keo as its lag (see cohort.py)
    "vancomycin": LibraryBinding(
        "vancomycin", "iv_infusion", vancomycin_q12h, {"plasma": "20578-1"}, "20578-1", {"2160-0": "scr_mg_dl"},
    ),
    "vancomycin_thomson": LibraryBinding(
        "vancomycin", "iv_infusion", vancomycin_q12h, {"plasma": "20578-1"}, "20578-1", {"2160-0": "scr_mg_dl"},
    ),
    "docetaxel_friberg": LibraryBinding(
        "docetaxel", "iv_infusion", docetaxel_q3w, {"anc": "751-8"}, "751-8",
    ),
    "warfarin_hamberg": LibraryBinding("warfarin", "oral", warfarin_daily, {"inr": "34714-6"}, "34714-6"),
}


# Fixed shapes, so that the jitted forward model compiles once per model: times go through it in
# pieces of _TIME_PIECE, and dose tables are padded to powers of two of at least _MIN_SLOTS.
_TIME_PIECE = 1024
_MIN_SLOTS = 16


def _slots(n: int) -> int:
    return max(_MIN_SLOTS, 1 << (max(n, 1) - 1).bit_length())


@functools.cache
def _forward():
    """The jitted forward model: log-parameters, course, times (h) -> (course at the last time,
    (T, A) analyte values)."""
    import jax

    from assimilation.simulate import amounts_after, predict_readings

    @functools.partial(jax.jit, static_argnums=0)
    def forward(model, log_params, course, times_h):
        course, amounts = amounts_after(model, log_params, course, times_h)
        params = model.parameters(log_params)
        return course, jax.vmap(lambda x: predict_readings(model, params, x))(amounts)

    return forward


def _load(name: str):
    """`assimilation.load_model(name)`; a model file in assimilation/models/ not yet listed as a
    built-in is imported directly (one model object per name either way)."""
    import importlib

    from assimilation import load_model

    try:
        return load_model(name)
    except ValueError:
        try:
            return importlib.import_module(f"assimilation.models.{name}").model
        except ModuleNotFoundError:
            raise ValueError(f"no library model {name!r}") from None


class LibraryTruthModel:
    """`TruthModel` over an `assimilation` library model and its wire binding."""

    def __init__(self, library_name: str, binding: LibraryBinding | None = None):
        self.model = _load(library_name)
        self.binding = binding or BINDINGS.get(library_name)
        if self.binding is None:
            raise ValueError(f"library model {library_name!r} has no wire binding (drug, regimen, analyte codes)")
        names = [a.name.lower() for a in self.model.analytes]
        codes = {name: self.binding.analyte_codes.get(name) for name in names}
        self._columns = {code: i for i, (name, code) in enumerate(codes.items()) if code is not None}
        if self.binding.plasma_analyte not in self._columns:
            raise ValueError(
                f"library model {library_name!r} has analytes {names}; none maps to {self.binding.plasma_analyte}"
            )
        self.name = library_name
        self.drug = self.binding.drug
        self.route = self.binding.route
        self.plasma_analyte = self.binding.plasma_analyte
        self.analytes = tuple(self._columns) + tuple(self.binding.extra_constant)

    def sample_covariates(self, rng: np.random.Generator) -> dict[str, float | str]:
        return sample_ward_patient(rng)

    def sample_parameters(self, covariates: Mapping[str, object], rng: np.random.Generator) -> dict[str, float]:
        from assimilation.parameters import prior_mean

        population = self.model.population
        log_theta = prior_mean(population, dict(covariates))
        log_theta = log_theta + population.omega_sqrt() @ rng.standard_normal(population.n_parameters)
        return {name: float(v) for name, v in zip(population.names, np.exp(log_theta))}

    def regimen(self, covariates: Mapping[str, object], start_t: float, end_t: float) -> list[ScheduledDose]:
        return self.binding.regimen(covariates, start_t, end_t)

    def trajectories(
        self,
        parameters: Mapping[str, float],
        covariates: Mapping[str, object],
        doses: Sequence[AdministeredDose],
        times: np.ndarray,
    ) -> dict[str, np.ndarray]:
        import jax.numpy as jnp

        from assimilation import Dose
        from assimilation.simulate import Course, dose_table_of

        times = np.asarray(times, dtype=float)
        given = [d for d in doses if d.given]
        origin = min([float(times.min())] + [d.t for d in given]) if len(times) else 0.0
        order = np.argsort(times, kind="stable")
        pieces = max(1, -(-len(times) // _TIME_PIECE))
        padded = np.full(pieces * _TIME_PIECE, times[order][-1] if len(times) else origin)
        padded[: len(times)] = times[order]
        table = dose_table_of(
            self.model,
            [Dose((d.t - origin) / 3600.0, d.amount_mg, self.model.dose_compartment, d.duration_s / 3600.0) for d in given],
            slots=_slots(len(given)),
        )
        # κ = 0: a virtual patient keeps its parameters across occasions (no IOV in the truth)
        log_params = jnp.log(jnp.asarray([parameters[n] for n in self.model.population.names], jnp.float32))
        log_params = jnp.concatenate([log_params, jnp.zeros(self.model.n_parameters - log_params.size, jnp.float32)])
        # the course starts from the model's start state (no drug) at the origin (the first time or dose), as in `amounts_at`
        course = Course(self.model.amounts_at_start(jnp.float32), jnp.float32(0.0), table)
        hours = ((padded - origin) / 3600.0).astype(np.float32).reshape(pieces, _TIME_PIECE)  # host: no slicing kernels
        values = []
        for piece in hours:
            course, piece_values = _forward()(self.model, log_params, course, piece)
            values.append(np.asarray(piece_values))
        values = np.concatenate(values)
        out = {}
        for code, column in self._columns.items():
            column_values = np.empty(len(times))
            column_values[order] = values[: len(times), column]
            out[code] = np.maximum(column_values, 0.0)
        for code, covariate in self.binding.extra_constant.items():
            out[code] = np.full(times.shape, float(covariates[covariate]))
        return out
