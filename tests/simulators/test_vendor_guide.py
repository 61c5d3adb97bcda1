"""Every `mosquitto_pub` example in docs/VENDORS.md is run against a real Mosquitto while
`mipd conformance` watches its device: each must pass the wire contract."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest

from device_simulators.conformance import watch
from tests.simulators.test_conformance import mosquitto_pub  # noqa: F401  (fixture)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "VENDORS.md"
EXAMPLES = [line for line in GUIDE.read_text().splitlines() if line.startswith("mosquitto_pub ")]


def test_the_guide_has_examples_of_every_topic_a_device_publishes():
    topics = {re.search(r"-t mipd/v1/dev/[^/ ]+/(\w+)", line).group(1) for line in EXAMPLES}
    assert topics == {"reading", "dose", "status"}
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda line: re.search(r"-t (\S+)", line).group(1))
def test_guide_example_passes_conformance(mosquitto, mosquitto_pub, example):  # noqa: F811
    device = re.search(r"-t mipd/v1/dev/([^/ ]+)/", example).group(1)
    command = example.replace("-h localhost -p 1883", f"-h 127.0.0.1 -p {mosquitto.port}")
    ready, result = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: result.update(report=watch(mosquitto.url, device, timeout_s=15, max_messages=1, ready=ready.set)),
        daemon=True,
    )
    thread.start()
    assert ready.wait(10)
    subprocess.run(["bash", "-c", command], check=True, timeout=10)
    thread.join(20)
    report = result["report"]
    assert report.exit_code == 0, [v.describe() for v in report.verdicts]
