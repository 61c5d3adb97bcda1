"""Process-level set-up done by the service runtime."""

import gc

from mipdstream.config import Settings
from mipdstream.runtime import GC_YOUNG_THRESHOLD, ingest_service


def test_an_ingest_service_process_collects_its_youngest_generation_less_often(tmp_path):
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])  # CPython's default
    try:
        settings = Settings(data_dir=tmp_path, broker_url="embedded", embedded_broker_port=0, http_port=0)
        with ingest_service(settings, start=False):
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.set_threshold(*before)
