"""The HTTP face of the service: one FastAPI app, one router per resource."""

from mipdstream.api.app import create_app

__all__ = ["create_app"]
