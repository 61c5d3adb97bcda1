"""The live event stream over a real HTTP connection: a reading published by a device arrives
as an event with an id; a reconnect with Last-Event-ID resumes after it; keep-alive comments
flow while nothing happens; another team's events never arrive."""

import json
import threading
import time

import httpx



class Stream:
    """Reads one SSE connection in a thread: events as dicts, comments counted."""

    def __init__(self, api, username: str, last_event_id: str | None = None):
        headers = {"Authorization": f"Bearer {api.tokens[username]}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.events: list[dict] = []
        self.comments: list[str] = []
        self.headers: dict = {}
        self._client = httpx.Client(base_url=api.live.http_url, headers=headers, timeout=httpx.Timeout(30, read=None))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        with self._client.stream("GET", "/api/v1/events") as response:
            self.headers = dict(response.headers)
            event: dict = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line == "":
                    if "data" in event:
                        self.events.append({**event, "data": json.loads(event["data"])})
                    event = {}
                else:
                    field, _, value = line.partition(":")
                    event[field] = value.removeprefix(" ")

    def wait(self, predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self._stop.set()
        self._client.close()


def readings_of(stream, patient_id):
    return [e for e in stream.events if e.get("event") == "reading" and e["data"]["patient_id"] == patient_id]


def test_readings_arrive_live_and_a_reconnect_resumes_after_the_last_event_id(api):
    patient_id, origin = api.serum_patient()
    other_patient, other_origin = api.serum_patient(team="team-b")
    device_id = api.device_for(patient_id, origin)
    other_device = api.device_for(other_patient, other_origin)
    stream, other_team = Stream(api, "clin-a"), Stream(api, "clin-b")
    assert stream.wait(lambda s: "connected" in s.comments)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-accel-buffering"] == "no" and stream.headers["cache-control"] == "no-cache"
    api.publish_readings(device_id, [(origin + 3600, 21.0)])
    api.publish_readings(other_device, [(other_origin + 3600, 5.0)])
    assert stream.wait(lambda s: len(readings_of(s, patient_id)) == 1)
    first = readings_of(stream, patient_id)[0]
    assert first["data"]["value"] == 21.0 and first["data"]["device_id"] == device_id and first["id"]
    assert stream.wait(lambda s: any(e.get("event") == "posterior" and e["data"]["patient_id"] == patient_id for e in s.events))
    assert other_team.wait(lambda s: len(readings_of(s, other_patient)) == 1)
    stream.close()

    api.publish_readings(device_id, [(origin + 2 * 3600, 18.0), (origin + 3 * 3600, 16.0)])  # while disconnected
    assert api.assimilated(patient_id, 3.0)
    resumed = Stream(api, "clin-a", last_event_id=first["id"])
    assert resumed.wait(lambda s: len(readings_of(s, patient_id)) == 2)
    assert [e["data"]["value"] for e in readings_of(resumed, patient_id)] == [18.0, 16.0]  # not the 21.0 seen before
    ids = [int(e["id"].split("-")[1]) for e in resumed.events]
    assert ids == sorted(ids) and ids[0] > int(first["id"].split("-")[1])
    assert resumed.wait(lambda s: "keep-alive" in s.comments, timeout=10)  # api_sse_keepalive_s = 0.5 in tests
    resumed.close()
    assert all(e["data"]["patient_id"] != patient_id for e in other_team.events)
    assert all(e["data"]["patient_id"] != other_patient for e in stream.events + resumed.events)
    other_team.close()


def test_an_unknown_or_impossible_last_event_id_gets_a_reset_event(api):
    for last_event_id in ("0000-5", f"{api.live.events.boot}-99999999"):  # another boot; not issued yet
        stream = Stream(api, "clin-a", last_event_id=last_event_id)
        assert stream.wait(lambda s: any(e.get("event") == "reset" for e in s.events)), last_event_id
        reset = next(e for e in stream.events if e.get("event") == "reset")
        boot, _, seq = reset["id"].partition("-")
        assert boot == api.live.events.boot and int(seq) <= api.live.events.latest()  # resume from here
        stream.close()


def test_decisions_and_acknowledgements_are_pushed(api):
    patient_id, _ = api.serum_patient()
    stream = Stream(api, "ro-a")
    assert stream.wait(lambda s: "connected" in s.comments)
    rec = api.recommendation(patient_id)
    with api.as_("clin-a") as clinician:
        clinician.post(f"/api/v1/recommendations/{rec.recommendation_id}/decision",
                       json={"decision": "accept", "reason": "ok"}).raise_for_status()
    assert stream.wait(lambda s: any(e.get("event") == "recommendation" and e["data"]["status"] == "accepted" for e in s.events))
    stream.close()
