"""Payloads of the v1 wire contract and the stateless part of their validation.

A payload is one JSON object, or a JSON array of such objects (a SenML-style pack that
a device uses to upload a backlog). Field names follow SenML (RFC 8428) where SenML has
one: `n` name (here the analyte code), `u` unit, `v` value, `t` time. Times are seconds
since the Unix epoch, UTC, as SenML absolute times.

`parse_readings` and `parse_dose_events` never raise on bad input: each element comes
back either as a valid message or as an `Invalid` carrying the reason code the sender is
told on its error topic. Checks that need state (is the device enrolled?) are ingest's.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

from wire.analytes import DRUGS, analyte
from wire.units import UnitError, canonical_value

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PACK_LENGTH = 1000
MAX_CLOCK_SKEW_S = 300.0
"""A measurement time further than this ahead of the receive time is a clock fault."""
EARLIEST_TIME_S = 1_577_836_800.0
"""2020-01-01T00:00:00Z: earlier measurement times mean an unset device clock."""
MAX_DOSE_MG = 20_000.0


class RejectReason(str, enum.Enum):
    """Why a message was rejected: the `reason` field on the device's error topic."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_JSON = "malformed_json"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_ANALYTE = "unknown_analyte"
    UNKNOWN_DRUG = "unknown_drug"
    UNKNOWN_UNIT = "unknown_unit"
    INCOMPATIBLE_UNIT = "incompatible_unit"
    OUT_OF_RANGE = "out_of_range"
    TIME_IN_FUTURE = "time_in_future"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_ENROLLED = "not_enrolled"
    BAD_TOPIC = "bad_topic"


MessageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Sequence = Annotated[int, Field(ge=0, le=2**63 - 1)]
EpochSeconds = Annotated[float, Field(allow_inf_nan=False)]


class _Message(BaseModel):
    # strict: "12.5" is not a number and 1 is not a string; forbid: a typo ("val") is an error
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Reading(_Message):
    """One measurement by one device."""

    id: MessageId = Field(description="Reading id, unique per device; the deduplication key.")
    seq: Sequence = Field(description="Per-device sequence number, increasing by one per message.")
    t: EpochSeconds = Field(description="Measurement time by the device clock, s since epoch.")
    n: str = Field(max_length=64, description="Analyte code: LOINC, or an x-mipd- local code.")
    u: str = Field(max_length=32, description="Unit of `v`, UCUM case-sensitive syntax.")
    v: float = Field(allow_inf_nan=False, description="Measured value in unit `u`.")
    bloq: bool = Field(
        default=False,
        description="True when the value was below the limit of quantification; `v` is then the limit.",
    )


class DoseEvent(_Message):
    """A dose given (smart pump, nurse) or taken / missed (e-pillbox)."""

    id: MessageId
    seq: Sequence
    t: EpochSeconds = Field(description="Start of administration, s since epoch.")
    drug: str = Field(max_length=40)
    amt: float = Field(gt=0, allow_inf_nan=False, description="Amount in unit `u`.")
    u: str = Field(max_length=32, description="Mass unit (UCUM), e.g. mg or g.")
    route: Literal["iv_bolus", "iv_infusion", "oral", "subcutaneous", "intramuscular"]
    dur: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Infusion duration, s (iv_infusion only)."
    )
    status: Literal["administered", "missed"] = "administered"
    scheduled_t: EpochSeconds | None = Field(default=None, description="Planned time, s since epoch.")


class DeviceStatus(_Message):
    """Retained device status; the broker publishes the Last Will `{"state": "offline"}`."""

    state: Literal["online", "offline"]
    t: EpochSeconds | None = None
    battery: float | None = Field(default=None, ge=0, le=1)
    firmware: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)


class SampleRequest(_Message):
    """What the service publishes (retained) on `mipd/v1/dev/{device}/schedule` for a
    point-of-care meter: when the next sample is most informative. The newest request
    replaces the previous one; the meter (or its app) reminds the patient at `t`."""

    id: MessageId = Field(description="Request id; a request seen before (retained, redelivered) is ignored.")
    t: EpochSeconds = Field(description="Suggested sampling time, s since epoch (true time).")
    n: str = Field(max_length=64, description="Analyte code to measure.")
    issued_at: EpochSeconds = Field(description="When the service made the suggestion, s since epoch.")
    reason: str = Field(max_length=200, description="Why this time, in plain language.")


class Rejection(BaseModel):
    """What ingest publishes on `mipd/v1/dev/{device}/error` for each rejected message."""

    model_config = ConfigDict(frozen=True)

    reason: RejectReason
    detail: str = Field(description="Plain-language explanation naming the offending field.")
    topic: str
    id: str | None = Field(default=None, description="The rejected message's id, when readable.")
    seq: int | None = None
    received_at: float


class Invalid(NamedTuple):
    """An element of a payload that failed validation."""

    reason: RejectReason
    detail: str
    id: str | None = None
    seq: int | None = None


class CanonicalReading(NamedTuple):
    reading: Reading
    value: float
    """`reading.v` converted to the analyte's canonical unit."""
    unit: str


class CanonicalDose(NamedTuple):
    dose: DoseEvent
    amount_mg: float


def _elements(payload: bytes) -> list[Any] | Invalid:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Invalid(RejectReason.PAYLOAD_TOO_LARGE, f"payload is {len(payload)} bytes; limit {MAX_PAYLOAD_BYTES}")
    try:
        document = from_json(payload)  # strict UTF-8 (the contract's encoding), parsed in Rust
    except ValueError as err:
        return Invalid(RejectReason.MALFORMED_JSON, f"payload is not UTF-8 JSON: {err}")
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and 0 < len(document) <= MAX_PACK_LENGTH:
        return document
    return Invalid(
        RejectReason.INVALID_FIELD,
        f"payload must be a JSON object or an array of 1..{MAX_PACK_LENGTH} objects",
    )


def _schema_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        where = ".".join(str(x) for x in e["loc"]) or "payload"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def _ids(element: Any) -> tuple[str | None, int | None]:
    if not isinstance(element, dict):
        return None, None
    rid, seq = element.get("id"), element.get("seq")
    return (rid if isinstance(rid, str) else None, seq if isinstance(seq, int) else None)


def _check_time(t: float, received_at: float) -> Invalid | None:
    if t < EARLIEST_TIME_S:
        return Invalid(RejectReason.INVALID_FIELD, f"t: {t} is before 2020-01-01; is the device clock set?")
    if t > received_at + MAX_CLOCK_SKEW_S:
        return Invalid(
            RejectReason.TIME_IN_FUTURE,
            f"t: {t} is {t - received_at:.0f} s after the time it was received (limit {MAX_CLOCK_SKEW_S:.0f} s)",
        )
    return None


def _reading(element: Any, received_at: float) -> CanonicalReading | Invalid:
    rid, seq = _ids(element)
    try:
        reading = Reading.model_validate(element)
    except ValidationError as err:
        return Invalid(RejectReason.INVALID_FIELD, _schema_error(err), rid, seq)
    return _checked_reading(reading, received_at, rid, seq)


def _checked_reading(reading: Reading, received_at: float, rid: str | None, seq: int | None) -> CanonicalReading | Invalid:
    """The checks after the schema: clock, analyte, unit, plausible range."""
    if (bad := _check_time(reading.t, received_at)) is not None:
        return bad._replace(id=rid, seq=seq)
    spec = analyte(reading.n)
    if spec is None:
        return Invalid(RejectReason.UNKNOWN_ANALYTE, f"n: analyte code {reading.n!r} is not in the v1 analyte table", rid, seq)
    try:
        value = canonical_value(reading.v, reading.u, spec.unit)
    except UnitError as err:
        return Invalid(RejectReason(err.reason), f"u: {err.detail} (analyte {spec.code})", rid, seq)
    if not (spec.low <= value <= spec.high) or not math.isfinite(value):
        return Invalid(
            RejectReason.OUT_OF_RANGE,
            f"v: {value:g} {spec.unit} is outside the plausible range {spec.low:g}..{spec.high:g} {spec.unit} for {spec.code}",
            rid,
            seq,
        )
    return CanonicalReading(reading, value, spec.unit)


def _dose(element: Any, received_at: float) -> CanonicalDose | Invalid:
    rid, seq = _ids(element)
    try:
        dose = DoseEvent.model_validate(element)
    except ValidationError as err:
        return Invalid(RejectReason.INVALID_FIELD, _schema_error(err), rid, seq)
    if (bad := _check_time(dose.t, received_at)) is not None:
        return bad._replace(id=rid, seq=seq)
    if dose.drug not in DRUGS:
        return Invalid(RejectReason.UNKNOWN_DRUG, f"drug: {dose.drug!r} is not one of {sorted(DRUGS)}", rid, seq)
    if dose.route == "iv_infusion" and not dose.dur:
        return Invalid(RejectReason.INVALID_FIELD, "dur: an iv_infusion needs a positive duration in s", rid, seq)
    if dose.route != "iv_infusion" and dose.dur:
        return Invalid(RejectReason.INVALID_FIELD, f"dur: only an iv_infusion has a duration, not {dose.route}", rid, seq)
    try:
        amount = canonical_value(dose.amt, dose.u, DRUGS[dose.drug])
    except UnitError as err:
        return Invalid(RejectReason(err.reason), f"u: {err.detail}", rid, seq)
    if amount > MAX_DOSE_MG:
        return Invalid(RejectReason.OUT_OF_RANGE, f"amt: {amount:g} mg exceeds {MAX_DOSE_MG:g} mg", rid, seq)
    return CanonicalDose(dose, amount)


def parse_readings(payload: bytes, received_at: float) -> list[CanonicalReading | Invalid]:
    """Validate a reading payload; one result per element, in payload order."""
    if payload[:1] == b"{" and len(payload) <= MAX_PAYLOAD_BYTES:
        # The common case, one valid reading: JSON straight to the model in Rust (a third of
        # the cost of parse-then-validate). Anything else takes the general path below, which
        # also words the rejection; tests/ingest/test_wire_contract.py checks both agree.
        try:
            reading = Reading.model_validate_json(payload)
        except ValidationError:
            pass
        else:
            return [_checked_reading(reading, received_at, reading.id, reading.seq)]
    elements = _elements(payload)
    if isinstance(elements, Invalid):
        return [elements]
    return [_reading(e, received_at) for e in elements]


def parse_dose_events(payload: bytes, received_at: float) -> list[CanonicalDose | Invalid]:
    """Validate a dose-event payload; one result per element, in payload order."""
    elements = _elements(payload)
    if isinstance(elements, Invalid):
        return [elements]
    return [_dose(e, received_at) for e in elements]


def parse_status(payload: bytes) -> DeviceStatus | Invalid:
    elements = _elements(payload)
    if isinstance(elements, Invalid):
        return elements
    if len(elements) != 1:
        return Invalid(RejectReason.INVALID_FIELD, "a status payload is one JSON object")
    try:
        return DeviceStatus.model_validate(elements[0])
    except ValidationError as err:
        return Invalid(RejectReason.INVALID_FIELD, _schema_error(err))
