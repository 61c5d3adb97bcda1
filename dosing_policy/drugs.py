"""What each drug's dose search optimises: target, practical regimens, utility and forecast grid.

One :class:`DrugPolicy` per ``DRUG`` named by a model file (``assimilation/models``); the live
service looks the drug up in :data:`POLICIES`.

* **vancomycin** — AUC24 400-600 mg·h/L, risk P(AUC24 > 600) (Rybak MJ et al., Am J Health
  Syst Pharm 2020;77:835-864); intermittent infusions (:data:`.regimen.VANCOMYCIN_SPACE`);
  the next 24 h and the 24 h after (weights 1, 0.5).
* **warfarin** — the dose maximising E[TTR] − P(INR > 4) over the next 7 days
  (:class:`.metrics.TimeInRangeBelowCeiling`, the utility of the closed-loop benchmark; INR
  2-3: Ageno W et al., Chest 2012;141(2 Suppl):e44S-e88S, ACCP 9th ed.; INR > 4: the bleeding
  risk rises steeply). The PTA shown is P(TTR ≥ 65 % and INR never above 4), 65 % being the
  time in range below which NICE judges anticoagulation control poor (NICE clinical guideline
  CG180, atrial fibrillation, 2014); the risk is P(INR > 4 within the week). Once-daily oral
  doses of 0-15 mg in 0.5 mg steps (tablets and half tablets; 0 = hold), held for the 7 days.
* **docetaxel** — the cycle's ANC nadir in 0.5-1.5 × 10^9/L (CTCAE v5.0 grade 2-3; some
  neutropenia signals adequate exposure, e.g. Di Maio M et al., Lancet Oncol 2005;6:669-677),
  risk P(nadir < 0.5), grade 4; one 1 h infusion per 21-day cycle, 40-200 mg in 10 mg steps
  (the label's highest dose is 100 mg/m², TAXOTERE prescribing information).

These are operating choices for decision support, shown to the clinician with their numbers,
and measured in the closed-loop benchmarks (benchmarks/closedloop*.py).
"""

from __future__ import annotations

from typing import NamedTuple

from .forecast import Grid
from .metrics import VANCOMYCIN_AUC24, Nadir, Target, TimeInRangeBelowCeiling
from .recommend import Utility
from .regimen import VANCOMYCIN_SPACE, RegimenSpace

__all__ = ["ClinicalTarget", "DrugPolicy", "POLICIES", "VANCOMYCIN", "WARFARIN", "DOCETAXEL", "WARFARIN_TTR", "DOCETAXEL_NADIR"]


class ClinicalTarget(NamedTuple):
    """The range a care team aims for, as they say it: ``quantity`` (e.g. "AUC24", "INR",
    "ANC nadir") between ``low`` and ``high`` in ``unit`` (UCUM), and where the default comes from."""

    quantity: str
    low: float
    high: float
    unit: str
    source: str

    def describe(self) -> str:
        return f"{self.quantity} {self.low:g}-{self.high:g} {self.unit}"


class DrugPolicy(NamedTuple):
    """``search_particles``: the posterior is thinned to this many particles for the search
    (:func:`.sample.thinned`; None = all), where every candidate is an ODE solve per particle.

    ``clinical`` is the default target as the care team reads it; :meth:`target_for` turns a
    team's own range of the same quantity into the :class:`.metrics.Target` the search uses."""

    target: Target
    space: RegimenSpace
    utility: Utility = Utility()
    grid: Grid = Grid()
    search_particles: int | None = None
    clinical: ClinicalTarget | None = None

    def target_for(self, low: float, high: float) -> Target:
        """The search target for the range [low, high] of :attr:`clinical`'s quantity.

        An exposure range (AUC24, a nadir) replaces the metric's range; vancomycin's upper end
        stays its toxicity threshold. A level range inside a time-in-range metric (INR) replaces
        the metric's band: the PTA remains P(TTR >= 65 % and never above the ceiling), the ceiling
        at least the range's top."""
        metric = self.target.metric
        if isinstance(metric, TimeInRangeBelowCeiling):
            return self.target._replace(metric=metric._replace(low=low, high=high, ceiling=max(metric.ceiling, high)))
        toxic_above = high if self.target.toxic_above == self.target.high else self.target.toxic_above
        return self.target._replace(low=low, high=high, toxic_above=toxic_above)

    @property
    def usual_interval(self) -> float:
        """h: what a single dose so far is taken to repeat at (12 h for vancomycin)."""
        return 12.0 if 12.0 in self.space.intervals else max(self.space.intervals)

    @property
    def bolus(self) -> bool:
        """Doses are given at once (oral, bolus) rather than infused."""
        return 0.0 in self.space.durations


WARFARIN_TTR = Target(TimeInRangeBelowCeiling(2.0, 3.0, 4.0, window=168.0), 0.65, 1.0, analyte="inr", toxic_below=0.0,
                      source="INR 2-3: Ageno W et al. Chest 2012;141:e44S-e88S; TTR >= 65 %: NICE CG180 (2014)",
                      risk_label="INR rises above 4 within the week")
DOCETAXEL_NADIR = Target(Nadir(window=504.0), 0.5, 1.5, analyte="anc", toxic_below=0.5,
                         source="CTCAE v5.0 neutropenia grades; grade 4 = ANC < 0.5 x 10^9/L")

VANCOMYCIN = DrugPolicy(VANCOMYCIN_AUC24, VANCOMYCIN_SPACE,
                        clinical=ClinicalTarget("AUC24", 400.0, 600.0, "mg.h/L", VANCOMYCIN_AUC24.source))
WARFARIN = DrugPolicy(
    WARFARIN_TTR,
    RegimenSpace(strength=0.5, min_amount=0.0, max_amount=15.0, intervals=(24.0,), durations=(0.0,), max_rate=None),  # 0 = hold
    Utility(windows=(0.0,), weights=(1.0,), toxicity_weight=0.0, expected=True),
    Grid(2.0, 85),  # 168 h
    search_particles=128,
    clinical=ClinicalTarget("INR", 2.0, 3.0, "{INR}", "Ageno W et al. Chest 2012;141:e44S-e88S (ACCP 9th ed.)"),
)
DOCETAXEL = DrugPolicy(
    DOCETAXEL_NADIR,
    RegimenSpace(strength=10.0, min_amount=40.0, max_amount=200.0, intervals=(504.0,), durations=(1.0,), max_rate=None),
    Utility(windows=(0.0,), weights=(1.0,), toxicity_weight=1.0),
    Grid(6.0, 85),  # 504 h, one cycle
    search_particles=64,  # the closed-loop benchmark decides on 32
    clinical=ClinicalTarget("ANC nadir", 0.5, 1.5, "10*9/L", "CTCAE v5.0 neutropenia grades 2-3 (Di Maio M et al. Lancet Oncol 2005;6:669-677)"),
)

POLICIES: dict[str, DrugPolicy] = {"vancomycin": VANCOMYCIN, "warfarin": WARFARIN, "docetaxel": DOCETAXEL}
