"""Population parameters: typical values, covariate models, between-patient variability.

An individual's parameter vector lives on the log scale::

    log θ_i = log θ_typical(covariates_i) + η_i,     η_i ~ N(0, Ω)

so θ_i is log-normal around the covariate-adjusted typical value. ``omega`` (Ω) is a full
covariance matrix on the log scale; a zero row/column marks a parameter that is fixed (known
exactly for every patient, e.g. bioavailability F = 1). Units are those of the model
(time h, amount mg, volume L, clearance L/h).

θ_typical(covariates) is stated per parameter in one of two ways, which a model may mix:

* an expression (:class:`Typical`): the typical value as a small pure function of the
  covariates it reads, written as the publication writes it, e.g. ``V = θ2·WGT·(1 + θ3·[APGR < 5])``
  or ``V1 = 5.1 − 0.0201 (AGE − 40) + 0.072 (LBM − 55)``: additive, power, exponential,
  piecewise (``min``, ``max``, ``a if x < b else c``), indicators (a comparison is 1 or 0) and
  categorical levels (:func:`level`) are all plain Python. :meth:`Population.of` builds a
  population from such expressions and numbers;
* multiplicative effects of one covariate each, θ_typical = typical · Π factor(covariate):
  :class:`PowerEffect`, :class:`ExponentialEffect`, :class:`CategoricalEffect` (and
  :class:`~assimilation.models.covariate_effects.LinearEffect`), whose factors are the
  one-line forms :func:`power`, :func:`exponential`, :func:`level` (and :func:`linear`).

``Population.typical`` is the typical patient's value at the reference covariates (for an
expression: the expression at the reference patient given to :meth:`Population.of`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
from jaxtyping import Float

from .covariates import CovariateError

__all__ = [
    "CovariateEffect",
    "PowerEffect",
    "ExponentialEffect",
    "CategoricalEffect",
    "Typical",
    "Population",
    "covariate_shift",
    "covariates_of",
    "exponential",
    "level",
    "linear",
    "power",
    "prior_mean",
    "typical_values",
]


# ----------------------------------------------------------------------------- one-line forms


def power(value: float, reference: float, exponent: float) -> float:
    """(value / reference) ** exponent: allometry, e.g. CL ∝ (WT/70)^0.75."""
    return float(np.power(float(value) / reference, exponent))


def exponential(value: float, reference: float, coefficient: float) -> float:
    """exp(coefficient · (value − reference)): e.g. an age effect on the log scale."""
    return float(np.exp(coefficient * (float(value) - reference)))


def linear(value: float, reference: float, slope: float, floor: float | None = None) -> float:
    """1 + slope · (value − reference), at least ``floor`` when one is given (a factor that
    must stay positive far outside the data the model was built on)."""
    factor = 1.0 + slope * (float(value) - reference)
    return factor if floor is None else max(factor, floor)


def level(value: object, factors: Mapping, default: float = 1.0) -> float:
    """factors[value] for a categorical covariate; ``default`` for a level not listed (the
    reference level), e.g. ``level(DIAL, {1: 0.7})``."""
    return float(factors.get(value, default))


class CovariateEffect(Protocol):
    """A multiplicative covariate effect, returned as its log: log θ_i += ``log_effect(value)``."""

    parameter: str
    covariate: str

    def log_effect(self, value: float) -> float: ...


class PowerEffect(NamedTuple):
    """θ ∝ (value / reference) ** exponent — allometry, e.g. CL ∝ (WT/70)^0.75."""

    parameter: str
    covariate: str
    reference: float
    exponent: float

    def log_effect(self, value: float) -> float:
        return float(np.log(power(value, self.reference, self.exponent)))


class ExponentialEffect(NamedTuple):
    """θ ∝ exp(coefficient · (value − reference)) — e.g. age effects."""

    parameter: str
    covariate: str
    reference: float
    coefficient: float

    def log_effect(self, value: float) -> float:
        return self.coefficient * (float(value) - self.reference)  # log of exponential(...), without its overflow


class CategoricalEffect(NamedTuple):
    """θ ∝ factors[level]; levels missing from ``factors`` have factor 1 (the reference level)."""

    parameter: str
    covariate: str
    factors: tuple[tuple[object, float], ...]  # ((level, factor), ...): hashable, unlike a dict

    def log_effect(self, value: object) -> float:
        return float(np.log(level(value, dict(self.factors))))


@dataclass(frozen=True, eq=False, repr=False)
class Typical:
    """The typical value of one parameter as a pure function of the covariates it reads.

    ``function`` takes the covariates named in ``reads``, in that order, and returns θ_typical
    in the parameter's unit (finite and > 0). By default ``reads`` is the function's own
    parameter names, so the signature is the declaration::

        Typical("V", lambda WGT, APGR: 0.984 * WGT * (1 + 0.159 * (APGR < 5)))

    The function sees nothing but those covariates (typed and normalised by the model, see
    :meth:`~assimilation.model.Model.check_covariates`), and is evaluated on the host, once per
    patient and covariate change, not per particle.
    """

    parameter: str
    function: Callable[..., float]
    reads: tuple[str, ...] | None = None

    def __post_init__(self):
        if not callable(self.function):
            raise TypeError(f"the typical value of {self.parameter!r} must be a function of covariates, got {self.function!r}")
        names = tuple(_argument_names(self.parameter, self.function) if self.reads is None else self.reads)
        try:
            inspect.signature(self.function).bind(*names)
        except TypeError as error:
            raise TypeError(f"the typical value of {self.parameter!r} reads {list(names)} but its function does not take them: {error}") from None
        except ValueError:  # a builtin without a signature: trust reads
            pass
        object.__setattr__(self, "reads", names)

    def value(self, covariates: Mapping) -> float:
        """θ_typical for ``covariates``; KeyError naming a missing covariate, CovariateError
        when the function gives no usable value for these covariates."""
        missing = [name for name in self.reads if name not in covariates]
        if missing:
            raise KeyError(f"covariate {missing[0]!r} needed by the typical value of {self.parameter!r} is missing")
        arguments = [covariates[name] for name in self.reads]
        value = self.function(*arguments)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            given = ", ".join(f"{n}={v!r}" for n, v in zip(self.reads, arguments))
            raise CovariateError(self.reads[0] if self.reads else self.parameter,
                                 f"the typical value of {self.parameter!r} is {value!r} for {given or 'no covariates'}: "
                                 f"it must be a positive finite number (covariates outside what the model allows?)")
        return number

    def __repr__(self) -> str:  # stable across processes (a model's version hash includes it)
        return f"Typical({self.parameter!r}, reads={self.reads!r}, source={_source_text(self.function)!r})"


def _argument_names(parameter: str, function: Callable) -> tuple[str, ...]:
    try:
        arguments = inspect.signature(function).parameters.values()
    except ValueError:
        raise TypeError(f"the typical value of {parameter!r}: cannot read the covariate names from {function!r}; give reads=(...)") from None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(a.kind not in kinds for a in arguments):
        raise TypeError(f"the typical value of {parameter!r}: name each covariate as a plain argument (no *args, **kwargs or keyword-only)")
    return tuple(a.name for a in arguments)


def _source_text(function: Callable) -> str:
    try:
        return " ".join(inspect.getsource(function).split())
    except (OSError, TypeError):
        return getattr(function, "__qualname__", type(function).__name__)


def covariates_of(effect) -> tuple[str, ...]:
    """The covariates a covariate model reads: an expression's ``reads``, a one-covariate
    effect's ``covariate``."""
    return effect.reads if isinstance(effect, Typical) else (effect.covariate,)


class Population(NamedTuple):
    """Population distribution of the individual parameters.

    Attributes:
        names: parameter names; their order is the order of the log-parameter vector.
        typical: typical values (natural units) at the reference covariates, shape (p,).
        omega: covariance of η on the log scale, shape (p, p); zero variance = fixed parameter.
        effects: covariate models: expressions (:class:`Typical`, at most one per parameter: it
            states θ_typical, and ``typical`` holds its value at the reference patient) and
            one-covariate multiplicative effects (applied in order, on top of an expression).
    """

    names: tuple[str, ...]
    typical: Float[np.ndarray, " p"]
    omega: Float[np.ndarray, "p p"]
    effects: tuple[CovariateEffect | Typical, ...] = ()

    @classmethod
    def of(cls, typical: Mapping[str, float | Callable[..., float] | Typical], omega, reference: Mapping | None = None,
           effects: Sequence[CovariateEffect] = ()) -> "Population":
        """A population from each parameter's typical value, in the order given: a number, or a
        function of covariates (its argument names are the covariates it reads, see
        :class:`Typical`). ``reference``: the covariates of the patient whose values
        ``Population.typical`` holds (needed when any value is a function); ``effects``: further
        one-covariate effects. Example (phenobarbital in neonates, NONMEM's pheno)::

            Population.of({"CL": lambda WGT: 0.00470 * WGT,
                           "V": lambda WGT, APGR: 0.984 * WGT * (1 + 0.159 * (APGR < 5))},
                          omega=np.diag([0.0294, 0.0279]), reference={"WGT": 1.3, "APGR": 7})
        """
        expressions = []
        for name, value in typical.items():
            if isinstance(value, Typical):
                if value.parameter != name:
                    raise ValueError(f"typical value given for {name!r} is the expression of {value.parameter!r}")
                expressions.append(value)
            elif callable(value):
                expressions.append(Typical(name, value))
        if expressions and reference is None:
            raise ValueError(f"typical values of {[e.parameter for e in expressions]} are functions of covariates: "
                             "give the reference patient's covariates (reference={...})")
        by_name = {e.parameter: e for e in expressions}
        values = [by_name[name].value(reference) if name in by_name else float(value) for name, value in typical.items()]
        names = tuple(typical)
        omega = np.asarray(omega, np.float64)
        if omega.shape != (len(names), len(names)):
            raise ValueError(f"omega has shape {omega.shape}; {len(names)} parameters {list(names)} need ({len(names)}, {len(names)})")
        return cls(names, np.asarray(values, np.float64), omega, tuple(expressions) + tuple(effects))

    @property
    def n_parameters(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def omega_sqrt(self) -> Float[np.ndarray, "p p"]:
        """A square root L with L Lᵀ = Ω that tolerates fixed (zero-variance) parameters."""
        values, vectors = np.linalg.eigh(np.asarray(self.omega, dtype=np.float64))
        return vectors * np.sqrt(np.clip(values, 0.0, None))

    def random_mask(self) -> np.ndarray:
        """True where the parameter varies between patients (Ω_ii > 0)."""
        return np.diag(np.asarray(self.omega)) > 0


def covariate_shift(population: Population, covariates: dict) -> Float[np.ndarray, " p"]:
    """log θ_typical(covariates) − log ``population.typical``, shape (p,): an expression's
    log(value / typical) plus the log-effects of the one-covariate effects. Missing covariates
    raise KeyError naming the covariate, since silently using the reference value would bias
    the prior."""
    shift = np.zeros(population.n_parameters)
    typical = np.asarray(population.typical, dtype=np.float64)
    for effect in population.effects:
        i = population.index(effect.parameter)
        if isinstance(effect, Typical):
            shift[i] += np.log(effect.value(covariates)) - np.log(typical[i])
            continue
        if effect.covariate not in covariates:
            raise KeyError(f"covariate {effect.covariate!r} needed by the effect on {effect.parameter!r} is missing")
        shift[i] += effect.log_effect(covariates[effect.covariate])
    return shift


def prior_mean(population: Population, covariates: dict) -> Float[np.ndarray, " p"]:
    """Prior mean (= mode) of log θ for a patient: log θ_typical(covariates) = log typical + covariate shift."""
    return np.log(np.asarray(population.typical, dtype=np.float64)) + covariate_shift(population, covariates)


def typical_values(population: Population, covariates: dict) -> dict[str, float]:
    """θ_typical(covariates) of every parameter, natural units (the prior median of θ)."""
    return dict(zip(population.names, np.exp(prior_mean(population, covariates)).tolist()))


def as_covariate_list(covariates: dict | Sequence[dict] | None) -> list[dict]:
    """One dict per patient; a single dict means one patient."""
    if covariates is None:
        return [{}]
    if isinstance(covariates, dict):
        return [covariates]
    return [dict(c) for c in covariates]
