"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str
    patients: int
    queued_batches: int
    readings_stored: int
    broker: str


@router.get("/healthz", response_model=Health, summary="Is the service up, and how busy is it")
def healthz(request: Request) -> Health:
    live = request.app.state.live
    return Health(
        status="ok",
        patients=len(live.db.patients()),
        queued_batches=live.assimilator.queue_depth(),
        readings_stored=live.ingest.consumer.stats.readings,
        broker=live.ingest.url,
    )


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
def metrics(request: Request) -> Response:
    live = request.app.state.live
    body = generate_latest(live.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
