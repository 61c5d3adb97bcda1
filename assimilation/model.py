"""A pharmacometric model = population + structure + dosing attributes + observed analytes.

A new model is one short Python file that builds a :class:`Model` and binds it to the name
``model`` (see ``assimilation/models/one_compartment_oral.py``); load it with
``load_model("path/to/file.py")`` or, for the built-ins, ``load_model("one_compartment_oral")``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .covariates import Categorical, Covariate, CovariateError, check_covariates
from .occasions import Occasions
from .parameters import Population, Typical, covariates_of, prior_mean
from .residuals import ResidualError
from .structure import Dynamics

__all__ = ["Analyte", "Sensor", "Model", "load_model", "BUILTIN_MODELS"]

BUILTIN_MODELS = (
    "one_compartment_oral", "two_compartment_infusion",
    "vancomycin", "vancomycin_thomson", "vancomycin_purwonugroho2012", "docetaxel_friberg", "warfarin_hamberg",
)


class Sensor(NamedTuple):
    """What belongs to the physical sensor behind an analyte, and restarts when it is changed
    (:class:`~assimilation.events.SensorChange`): ``states`` (compartment names) return to
    their ``Model.initial_amounts``, ``parameters`` (population parameter names, uncorrelated in
    Ω with every other parameter) are drawn afresh from the prior."""

    states: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Analyte:
    """Something a sensor reads: ``predict(params, amounts) -> expected reading`` (e.g.
    central amount / V in mg/L), its residual error and an optional default LLOQ.

    ``code`` is the wire contract's analyte code (LOINC or x-mipd-, see wire/analytes.py)
    whose readings this analyte explains; ``unit`` must be that code's canonical unit.
    ``equivalent_codes`` are other codes for the same quantity in the same unit, read as this
    analyte too (a point-of-care INR, LOINC 34714-6, beside the laboratory's 6301-6).
    """

    name: str
    predict: Callable[[dict, Float[Array, " n"]], Float[Array, ""]]
    error: ResidualError
    lloq: Optional[float] = None
    unit: str = "mg/L"
    code: Optional[str] = None
    persistence_h: float = 0.0
    """How long this sensor's errors persist, h (0: readings independent given the state).

    A reading taken Δt after the previous reading of the same analyte counts with weight
    w = min(1, Δt / persistence_h): its log-likelihood is multiplied by w (a tempered, or
    composite, likelihood; for Gaussian errors the same as variance / w). Readings every 5 min
    from a sensor whose calibration and drift errors persist for 2 h then carry, together, the
    information of one reading per 2 h whatever the cadence, instead of an overconfident
    posterior built on hundreds of correlated errors a day."""
    sensor: Optional[Sensor] = None
    """The states and parameters of the device that reads this analyte (e.g. a wearable's
    calibration gain and drift), restarted by a ``SensorChange``; None: nothing to restart."""
    equivalent_codes: tuple[str, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        """Every wire code this analyte explains, its own ``code`` first."""
        return ((self.code,) if self.code else ()) + tuple(self.equivalent_codes)

    def reads(self, code: str) -> bool:
        """Whether a reading with wire analyte ``code`` (or this analyte's name) observes this analyte."""
        return code == self.name or code in self.codes


@dataclass(frozen=True, eq=False)
class Model:
    """Everything the filters need to know about a drug; the algorithms know nothing else.

    Attributes:
        name: identifier, stored in snapshots.
        population: typical values, covariate effects and Ω (log scale).
        dynamics: :class:`LinearCompartments` (exact) or :class:`OdeCompartments`.
        compartments: compartment names, in state order.
        analytes: observed quantities; readings refer to them by index or name.
        bioavailability: ``params -> F`` per compartment, shape (n,); default all ones.
        lag_time: ``params -> lag`` per compartment in h, shape (n,); default zeros.
        dose_compartment: default target of doses given without a compartment.
        occasions: optional inter-occasion variability (:class:`Occasions`); its κ follow the
            population parameters in the log-parameter vector.
        initial_amounts: the state at the start of a patient's record (model time zero), one
            value per compartment; default all zeros (no drug on board). A non-zero entry
            belongs to a state that is not a drug amount, such as a sensor's gain at insertion.
        covariates: the covariates the model uses, typed (:mod:`.covariates`): unit and
            plausible range, or allowed levels. Every covariate a covariate model reads (an
            effect's covariate, an expression's ``reads``) must be declared. A model that
            declares none (a quick user model) accepts exactly the covariates its covariate
            models read, unchecked.
        parameter_units: UCUM unit of each population parameter, for reports ((name, unit), ...);
            a parameter not listed is shown without a unit.

    Hashing is by identity, so a Model can be a static argument of ``jax.jit``.
    """

    name: str
    population: Population
    dynamics: Dynamics
    compartments: tuple[str, ...]
    analytes: tuple[Analyte, ...]
    bioavailability: Optional[Callable[[dict], Float[Array, " n"]]] = None
    lag_time: Optional[Callable[[dict], Float[Array, " n"]]] = None
    dose_compartment: int = 0
    occasions: Optional[Occasions] = None
    initial_amounts: Optional[tuple[float, ...]] = None
    covariates: tuple[Covariate, ...] = ()
    parameter_units: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        self._check_declared_covariates()
        if self.initial_amounts is not None and len(self.initial_amounts) != self.n_compartments:
            raise ValueError(f"model {self.name!r}: initial_amounts has {len(self.initial_amounts)} values "
                             f"for {self.n_compartments} compartments")
        if self.occasions is not None:
            unknown = [name for name, _ in self.occasions.variability if name not in self.population.names]
            if unknown:
                raise ValueError(f"model {self.name!r}: occasions name unknown parameters {unknown}")
        for analyte in self.analytes:
            if analyte.sensor is not None:
                self._check_sensor(analyte)

    def _check_sensor(self, analyte: Analyte) -> None:
        states, parameters = analyte.sensor
        unknown = [s for s in states if s not in self.compartments] + [p for p in parameters if p not in self.population.names]
        if unknown:
            raise ValueError(f"model {self.name!r}: the sensor of analyte {analyte.name!r} names unknown states or parameters {unknown}")
        # drawn afresh from their marginal prior: exact only if Ω couples them to nothing else
        inside = np.isin(self.population.names, parameters)
        omega = np.asarray(self.population.omega)
        if np.any(omega[np.ix_(inside, ~inside)] != 0):
            raise ValueError(f"model {self.name!r}: sensor parameters {list(parameters)} are correlated in Ω with other parameters")

    def _check_declared_covariates(self) -> None:
        """Every covariate model names a population parameter (at most one expression each),
        and, when the model declares covariates, reads only declared ones."""
        unknown = [e.parameter for e in self.population.effects if e.parameter not in self.population.names]
        if unknown:
            raise ValueError(f"model {self.name!r}: a covariate model is given for {unknown[0]!r}, "
                             f"which is not a population parameter {list(self.population.names)}")
        expressed = [e.parameter for e in self.population.effects if isinstance(e, Typical)]
        twice = sorted({name for name in expressed if expressed.count(name) > 1})
        if twice:
            raise ValueError(f"model {self.name!r}: parameter {twice[0]!r} has more than one typical-value expression")
        if not self.covariates:
            return
        declared = {c.name: c for c in self.covariates}
        if len(declared) != len(self.covariates):
            raise ValueError(f"model {self.name!r}: a covariate is declared twice")
        for effect in self.population.effects:
            undeclared = [name for name in covariates_of(effect) if name not in declared]
            if undeclared:
                what = "the typical value of" if isinstance(effect, Typical) else "the effect on"
                raise ValueError(f"model {self.name!r}: {what} {effect.parameter!r} uses covariate {undeclared[0]!r}, "
                                 f"which is not declared in Model.covariates")
            if isinstance(effect, Typical):
                continue
            covariate = declared[effect.covariate]
            factors = getattr(effect, "factors", None)
            if isinstance(covariate, Categorical) and factors is not None:
                spellings = dict(covariate.aliases)
                stray = [level for level, _ in factors if level not in covariate.levels and level not in spellings]
                if stray:
                    raise ValueError(f"model {self.name!r}: the effect on {effect.parameter!r} names levels {stray} "
                                     f"that covariate {covariate.name!r} does not have")

    def check_covariates(self, values: dict, *, partial: bool = False) -> dict:
        """``values`` checked against :attr:`covariates` and normalised (see
        :func:`.covariates.check_covariates`); raises :class:`.covariates.CovariateError`.
        ``partial``: only some covariates (a change from a given time on)."""
        if self.covariates:
            checked = check_covariates(self.covariates, values, partial=partial)
        else:
            needed = list(self.covariate_names)
            unknown = [name for name in values if name not in needed]
            if unknown:
                raise CovariateError(unknown[0], f"unknown covariate {unknown[0]!r}; model {self.name!r} uses: {', '.join(needed) or 'none'}")
            missing = [] if partial else [name for name in needed if name not in values]
            if missing:
                raise CovariateError(missing[0], f"covariate {missing[0]!r} is missing (model {self.name!r} uses {', '.join(needed)})")
            checked = {name: values[name] for name in needed if name in values}
        if not partial:  # each value in range may still give an expression no usable value (a volume ≤ 0)
            for effect in self.population.effects:
                if isinstance(effect, Typical):
                    effect.value(checked)
        return checked

    def unit_of(self, parameter: str) -> str:
        return dict(self.parameter_units).get(parameter, "")

    @property
    def covariate_names(self) -> tuple[str, ...]:
        """The covariates a patient of this model has: declared, or named by the effects."""
        if self.covariates:
            return tuple(c.name for c in self.covariates)
        return tuple(dict.fromkeys(name for effect in self.population.effects for name in covariates_of(effect)))

    @property
    def n_compartments(self) -> int:
        return len(self.compartments)

    def amounts_at_start(self, dtype=jnp.float32) -> Float[Array, " n"]:
        """Amounts at the start of a patient's record (:attr:`initial_amounts`, default zeros)."""
        if self.initial_amounts is None:
            return jnp.zeros(self.n_compartments, dtype)
        return jnp.asarray(self.initial_amounts, dtype)

    def sensor_restart(self, analyte: int | str) -> tuple[np.ndarray, np.ndarray]:
        """(states, parameters) that a ``SensorChange`` of ``analyte`` restarts, as boolean masks
        over the compartments (n,) and the log-parameter vector (p,); all False without a sensor."""
        sensor = self.analytes[self.analyte_index(analyte)].sensor or Sensor()
        return np.isin(self.compartments, sensor.states), np.isin(self.parameter_names, sensor.parameters)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Entries of the log-parameter vector: the population's, then each occasion κ."""
        return self.population.names + (self.occasions.names if self.occasions is not None else ())

    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    def parameters(self, log_params: Float[Array, " p"]) -> dict:
        """Natural-scale parameter dict for one particle from its log-parameter vector
        (with IOV: θ_j = exp(log θ_j + κ_j) for the current occasion)."""
        log_params = jnp.asarray(log_params)
        if self.occasions is not None:
            p = self.population.n_parameters
            log_params = log_params[:p].at[self._kappa_targets].add(log_params[p:])
        values = jnp.exp(log_params)
        return {name: values[i] for i, name in enumerate(self.population.names)}

    @property
    def _kappa_targets(self) -> np.ndarray:
        return np.array([self.population.index(name) for name, _ in self.occasions.variability], np.int32)

    @property
    def kappa_slice(self) -> slice:
        """Where the occasion κ sit in the log-parameter vector (empty without IOV)."""
        return slice(self.population.n_parameters, self.n_parameters)

    def prior_mean(self, covariates: dict) -> Float[np.ndarray, " p"]:
        """Prior mean of the log-parameter vector: log θ_typical + covariate shift, κ = 0."""
        return np.concatenate([prior_mean(self.population, covariates), np.zeros(self.n_parameters - self.population.n_parameters)])

    def typical_log_params(self) -> Float[np.ndarray, " p"]:
        """The log-parameter vector of the typical patient at reference covariates (κ = 0)."""
        typical = np.log(np.asarray(self.population.typical, np.float64))
        return np.concatenate([typical, np.zeros(self.n_parameters - typical.size)])

    def prior_sqrt(self) -> Float[np.ndarray, "p p"]:
        """L with L Lᵀ = prior covariance of the log-parameter vector: blockdiag(Ω, diag(σ²))."""
        p, size = self.population.n_parameters, self.n_parameters
        root = np.zeros((size, size))
        root[:p, :p] = self.population.omega_sqrt()
        if self.occasions is not None:
            root[p:, p:] = np.diag(self.occasions.sd)
        return root

    def random_mask(self) -> np.ndarray:
        """True for entries that vary between patients or occasions (never jittered otherwise)."""
        return np.concatenate([self.population.random_mask(), np.ones(self.n_parameters - self.population.n_parameters, bool)])

    def dose_attributes(self, params: dict, dtype=jnp.float32):
        n = self.n_compartments
        F = jnp.ones(n, dtype) if self.bioavailability is None else jnp.asarray(self.bioavailability(params), dtype)
        lag = jnp.zeros(n, dtype) if self.lag_time is None else jnp.asarray(self.lag_time(params), dtype)
        return F, lag

    def compartment_index(self, compartment: int | str | None) -> int:
        if compartment is None:
            return self.dose_compartment
        if isinstance(compartment, str):
            try:
                return self.compartments.index(compartment)
            except ValueError:
                raise ValueError(f"model {self.name!r} has no compartment {compartment!r}; it has {self.compartments}") from None
        if not 0 <= int(compartment) < self.n_compartments:
            raise ValueError(f"compartment index {compartment} out of range for model {self.name!r} ({self.n_compartments} compartments)")
        return int(compartment)

    def analyte_index(self, analyte: int | str) -> int:
        if isinstance(analyte, str):
            names = [a.name for a in self.analytes]
            if analyte not in names:
                raise ValueError(f"model {self.name!r} has no analyte {analyte!r}; it has {names}")
            return names.index(analyte)
        if not 0 <= int(analyte) < len(self.analytes):
            raise ValueError(f"analyte index {analyte} out of range for model {self.name!r}")
        return int(analyte)


_LOADED: dict[str, Model] = {}


def load_model(name_or_path: str | Path) -> Model:
    """A built-in model by name, or the ``model`` defined in a Python file.

    Loading the same name/path twice returns the same object (so jitted code is reused).
    """
    key = str(name_or_path)
    if key in _LOADED:
        return _LOADED[key]
    path = Path(key)
    library = Path(__file__).resolve().parent / "models"
    if key in BUILTIN_MODELS or (key.isidentifier() and (library / f"{key}.py").exists()):
        module = importlib.import_module(f"assimilation.models.{key}")
    elif path.suffix == ".py" and path.exists():
        spec = importlib.util.spec_from_file_location(f"mipd_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        raise ValueError(f"unknown model {key!r}: not a built-in ({', '.join(BUILTIN_MODELS)}) and not an existing .py file")
    model = getattr(module, "model", None)
    if not isinstance(model, Model):
        raise ValueError(f"{key!r} does not define `model = Model(...)`")
    _LOADED[key] = model
    return model
