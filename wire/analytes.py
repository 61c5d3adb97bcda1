"""Analytes a device may report, with their canonical unit and physical plausibility range.

The code is LOINC where a LOINC term exists; analytes with no LOINC term (a biosensor in
interstitial fluid) use an `x-mipd-` local code, as FHIR allows for local codes.
The plausibility range rejects values that no living patient can have (a sensor or
transcription fault), not values outside a therapeutic target: those are the dosing
policy's business and must be stored.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Analyte:
    code: str
    """LOINC code, or an `x-mipd-` local code where LOINC has none."""
    display: str
    unit: str
    """Canonical UCUM unit: every stored value of this analyte is in this unit."""
    low: float
    high: float
    """Physically plausible range, in the canonical unit, inclusive."""
    loinc: bool = True


ANALYTES: dict[str, Analyte] = {
    a.code: a
    for a in [
        # LOINC 20578-1; vancomycin levels above ~150 mg/L are not seen even in overdose.
        Analyte("20578-1", "Vancomycin [Mass/volume] in Serum or Plasma", "mg/L", 0.0, 200.0),
        Analyte(
            "x-mipd-vancomycin-isf",
            "Vancomycin [Mass/volume] in Interstitial fluid by biosensor",
            "mg/L",
            0.0,
            200.0,
            loinc=False,
        ),
        # LOINC 751-8; the UCUM unit of LOINC's example is 10*3/uL, numerically equal to 10*9/L.
        Analyte("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*9/L", 0.0, 100.0),
        # LOINC 6301-6 (laboratory) and 34714-6 (point of care); INR is a ratio, UCUM {INR}.
        Analyte("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.5, 20.0),
        Analyte("34714-6", "INR in Blood by Coagulation assay", "{INR}", 0.5, 20.0),
        # LOINC 2160-0; a covariate source (renal function) for renally cleared drugs.
        Analyte("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.05, 30.0),
        # LOINC 4090-7 (vancomycin trough) deliberately absent: the timing is data, not a code.
    ]
}

DRUGS: dict[str, str] = {
    # drug name on the wire -> canonical amount unit
    "vancomycin": "mg",
    "docetaxel": "mg",
    "paclitaxel": "mg",
    "warfarin": "mg",
}


def analyte(code: str) -> Analyte | None:
    return ANALYTES.get(code)
