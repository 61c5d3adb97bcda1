"""Server-sent events: live updates of the team's patients (reading, dose, posterior, alert,
recommendation, regimen). Each event has an id; a reconnecting client sends ``Last-Event-ID``
and gets what it missed (or a ``reset`` event when that is no longer held). Keep-alive
comments every ``api_sse_keepalive_s``; a client that went away is noticed at the next write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mipdstream.api.auth import DB, Live, Reader, audit
from mipdstream.api.problems import problem_responses

router = APIRouter(prefix="/api/v1", tags=["live"], responses=problem_responses(401, 403, 422))

POLL_S = 0.2


@router.get("/events", response_class=EventSourceResponse, summary="Live updates (text/event-stream)")
async def events(
    user: Reader, live: Live, db: DB,
    last_event_id: Annotated[str | None, Header(max_length=64, description="Resume after this event id")] = None,
) -> AsyncIterable[ServerSentEvent]:
    hub = live.events
    keepalive_s = live.settings.api_sse_keepalive_s
    audit(db, user, "subscribe", "GET /api/v1/events", resumed_from=last_event_id)
    seq, pending, reset = hub.after(last_event_id, user.team)
    if reset:
        yield ServerSentEvent(event="reset", data={"reason": "events since your last id are no longer held"},
                              id=f"{hub.boot}-{seq}", retry=2000)
    else:
        yield ServerSentEvent(comment="connected", retry=2000)
    quiet_since = time.monotonic()
    while True:
        for event in pending:
            yield ServerSentEvent(event=event.kind, data=event.data, id=hub.event_id(event))
            seq = event.seq
        if pending:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= keepalive_s:
            yield ServerSentEvent(comment="keep-alive")
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)
        pending = hub.since(seq, user.team)
