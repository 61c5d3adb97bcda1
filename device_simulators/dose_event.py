"""Turning administered doses into wire-contract dose-event messages."""

from __future__ import annotations

from device_simulators.device import DeviceIdentity
from device_simulators.dosing import AdministeredDose
from device_simulators.message import Message, encode
from wire.topics import TopicKind


def dose_document(identity: DeviceIdentity, dose: AdministeredDose) -> dict:
    """One `DoseEvent` payload object; takes the device's next seq and id."""
    seq, rid = identity.take_seq()
    s = dose.scheduled
    document = {
        "id": rid, "seq": seq, "t": identity.stamp(dose.t), "drug": s.drug,
        "amt": float(s.amount_mg), "u": "mg", "route": s.route,
        "status": "administered" if dose.given else "missed",
        "scheduled_t": identity.stamp(s.t),
    }
    if s.route == "iv_infusion":
        # a missed infusion still has its planned duration; the contract wants one on every infusion
        document["dur"] = round(float(dose.duration_s if dose.given else s.duration_s), 3)
    return document


def dose_message(identity: DeviceIdentity, dose: AdministeredDose, send_t: float) -> Message:
    return Message(send_t, identity.topic(TopicKind.DOSE), encode(dose_document(identity, dose)))
