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
from typing import Callable, Optional

import jax.numpy as jnp
from jaxtyping import Array, Float

from .parameters import Population
from .residuals import ResidualError
from .structure import Dynamics

__all__ = ["Analyte", "Model", "load_model", "BUILTIN_MODELS"]

BUILTIN_MODELS = (
    "one_compartment_oral", "two_compartment_infusion",
    "vancomycin", "vancomycin_thomson", "docetaxel_friberg", "warfarin_hamberg",
)


@dataclass(frozen=True, eq=False)
class Analyte:
    """Something a sensor reads: ``predict(params, amounts) -> expected reading`` (e.g.
    central amount / V in mg/L), its residual error and an optional default LLOQ.

    ``code`` is the wire contract's analyte code (LOINC or x-mipd-, see wire/analytes.py)
    whose readings this analyte explains; ``unit`` must be that code's canonical unit.
    """

    name: str
    predict: Callable[[dict, Float[Array, " n"]], Float[Array, ""]]
    error: ResidualError
    lloq: Optional[float] = None
    unit: str = "mg/L"
    code: Optional[str] = None


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

    @property
    def n_compartments(self) -> int:
        return len(self.compartments)

    @property
    def n_parameters(self) -> int:
        return self.population.n_parameters

    def parameters(self, log_params: Float[Array, " p"]) -> dict:
        """Natural-scale parameter dict for one particle from its log-parameter vector."""
        values = jnp.exp(log_params)
        return {name: values[i] for i, name in enumerate(self.population.names)}

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
