"""Real servers started as subprocesses on free ports, for the tests and the benchmarks.

No mocks of the things we ship against: Mosquitto and influxd are the Debian binaries.
When a binary is missing the caller skips, unless MIPD_REQUIRE_SERVICES=1 (set by
.ci/run), where a missing service is a failure.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ingest.broker import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
INFLUXD = shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)


class ServiceMissing(RuntimeError):
    pass


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, name: str) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not listen on port {port} within {timeout} s")


class Mosquitto:
    """A Mosquitto broker with a generated config; restartable on the same port."""

    def __init__(self, workdir: Path, *, extra_config: str = "", anonymous: bool = True):
        if MOSQUITTO is None:
            raise ServiceMissing("mosquitto binary not found (Debian package 'mosquitto')")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        # The no-loss promise includes the broker config: with the defaults Mosquitto drops
        # QoS 1 messages for a subscriber that falls behind (max_queued_messages 1000).
        # `user`: started as root (CI), Mosquitto would drop to the `mosquitto` user, which
        # cannot write our temporary directory: no persistence (sessions lost on a restart)
        # and no log. Naming the current user keeps it as is (ignored when not root).
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_queued_bytes 1000000000\n"
            "max_inflight_messages 0\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
            + extra_config
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, self.proc, 10, "mosquitto")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Influxd:
    """An InfluxDB 1.x server (Debian `influxdb`) serving the v1 HTTP API `/write` + `/query`."""

    def __init__(self, workdir: Path):
        if INFLUXD is None:
            raise ServiceMissing("influxd binary not found (Debian package 'influxdb')")
        self.workdir = workdir
        self.port = free_port()
        self.rpc_port = free_port()
        self.config = workdir / "influxdb.conf"
        self.config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            "[meta]\n"
            f'  dir = "{workdir}/meta"\n'
            "[data]\n"
            f'  dir = "{workdir}/data"\n'
            f'  wal-dir = "{workdir}/wal"\n'
            '  wal-fsync-delay = "0s"\n'
            '  query-log-enabled = false\n'
            "[http]\n"
            "  enabled = true\n"
            f'  bind-address = "127.0.0.1:{self.port}"\n'
            "  log-enabled = false\n"
            "[monitor]\n"
            "  store-enabled = false\n"
            "[continuous_queries]\n"
            "  enabled = false\n"
            "[subscriber]\n"
            "  enabled = false\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Influxd:
        log = open(self.workdir / "influxd.log", "ab")
        self.proc = subprocess.Popen([INFLUXD, "-config", str(self.config)], stdout=log, stderr=log)
        _wait_port(self.port, self.proc, 30, "influxd")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 204:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise TimeoutError("influxd did not answer /ping")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def services_required() -> bool:
    return os.environ.get("MIPD_REQUIRE_SERVICES", "") not in ("", "0", "false")
