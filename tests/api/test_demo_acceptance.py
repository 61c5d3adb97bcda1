"""Acceptance test on the product as a newcomer meets it: the real ``mipd demo`` (all three
cohorts, the dosing policy on, the embedded broker and store) in a subprocess, driven in
headless Debian chromium as the printed user.

It opens the triage page and every patient's page, and fails on any 4xx/5xx answer to a
page's request or any other browser console error, an empty chart, a triage row without a
risk, or a patient page without its parts. It accepts one recommendation and rejects another
in the browser and checks the audit log and the regimen; every patient's printable report
renders (with its charts) for every drug. Screenshots go to test-output/acceptance/.

With ``MIPD_ACCEPTANCE_URL`` and ``MIPD_ACCEPTANCE_PASSWORD`` set it walks a demo already
running (``make demo`` in a fresh clone, as the README tells a newcomer) instead of starting one.
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
from urllib.parse import urlsplit

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


class RunningDemo:
    """A demo someone else started (``make demo`` in a fresh clone): walked, not stopped."""

    def __init__(self, url: str, password: str):
        self.url, self.password = url.rstrip("/"), password


@pytest.fixture(scope="module")
def demo():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if os.environ.get("MIPD_ACCEPTANCE_URL"):  # walk a demo the newcomer started by hand
        yield RunningDemo(os.environ["MIPD_ACCEPTANCE_URL"], os.environ["MIPD_ACCEPTANCE_PASSWORD"])
        return
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
    # the login page's own URL ends in next=/dashboard/: wait for the triage page's path itself
    wait_for(driver, lambda d: urlsplit(d.current_url).path == "/dashboard/", what="the triage page after login")


def chart_points(driver, element_id: str) -> int:
    """Data points drawn in a plotly chart (0 for an empty or missing chart)."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "if (!e || !e.data) return 0;"
        "return e.data.reduce((n, t) => n + (t.y ? t.y.filter(v => v !== null && !Number.isNaN(v)).length : 0), 0);", element_id)


def missing_parts(driver, patient_id: str) -> list[str]:
    """The parts of a patient's page a pharmacist needs that are not drawn yet (empty: complete)."""
    script = """
      const missing = [];
      const text = id => { const e = document.getElementById(id); return e ? e.textContent : ''; };
      const panels = [...document.querySelectorAll('#panels section.panel')];
      const traces = panels.map(p => { const c = p.querySelector('.chart'); return (c && c.data) || []; });
      if (panels.length === 0) missing.push('analyte panels');
      if (traces.some(t => t.length === 0)) missing.push('a panel chart');
      if (!traces.some(ts => ts.some(t => (t.name || '').startsWith('readings') && t.x && t.x.length))) missing.push('readings');
      if (!traces.some(ts => ts.some(t => (t.name || '').startsWith('current')))) missing.push('forecast under the current regimen');
      if (document.querySelectorAll('#parameters tbody tr').length === 0) missing.push('parameter table');
      if (!text('title').includes(arguments[0])) missing.push('title');
      if (text('regimen').length === 0) missing.push('regimen');
      const summary = text('summary');
      if (summary.startsWith('could not load')) missing.push('summary: ' + summary);
      return missing;"""
    missing = list(driver.execute_script(script, patient_id))
    return missing if chart_points(driver, "exposure") > 0 else [*missing, "exposure chart"]


def wait_for_page(driver, patient_id: str) -> None:
    """Wait until every part of the page is drawn; on time-out, name the parts still missing."""
    from selenium.common.exceptions import TimeoutException

    try:
        wait_for(driver, lambda d: not missing_parts(d, patient_id), timeout=PAGE_TIMEOUT_S, what=f"every part of {patient_id}'s page")
    except TimeoutException:
        driver.save_screenshot(str(ARTIFACTS / f"patient-{patient_id}-incomplete.png"))
        raise AssertionError(f"{patient_id}'s page after {PAGE_TIMEOUT_S:.0f} s lacks {missing_parts(driver, patient_id)}; "
                             f"console: {console_errors(driver)}") from None


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
        wait_for_page(browser, patient_id)
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
    open_ = client.get("/api/v1/recommendations", params={"status": "open"}).json()
    patients = list(dict.fromkeys(r["patient_id"] for r in open_))
    assert len(patients) >= 2, f"the demo raised open recommendations for {len(patients)} patient(s): {patients}"
    accepted = decide_on_the_page(browser, demo, client, patients[0], "accept", "agree: exposure below target")
    rejected = decide_on_the_page(browser, demo, client, patients[1], "reject", "renal function recovering, recheck first")
    current = client.get(f"/api/v1/patients/{patients[0]}/regimen").json()["current"]
    assert current["recommendation_id"] == accepted["recommendation_id"] and current["amount_mg"] == accepted["regimen"]["amount_mg"]
    assert client.get(f"/api/v1/patients/{patients[1]}/regimen").json()["current"]["recommendation_id"] != rejected["recommendation_id"]
    log = client.get("/api/v1/audit", params={"limit": 1000}).json()
    decisions = {(e["action"], e["recommendation_hash"], e["detail"].get("reason")) for e in log}
    assert ("accept-recommendation", accepted["hash"], "agree: exposure below target") in decisions
    assert ("reject-recommendation", rejected["hash"], "renal function recovering, recheck first") in decisions


def decide_on_the_page(browser, demo: Demo, client: httpx.Client, patient_id: str, button: str, comment: str) -> dict:
    """Decide on the proposal the patient page shows, as a pharmacist would; the decided
    recommendation as the API then gives it. The live policy may replace a proposal while it is
    read, or withdraw it (the page then says so, with a 409); the decision is then made on the new one."""
    from selenium.webdriver.common.by import By

    status = "accepted" if button == "accept" else "rejected"
    browser.get(f"{demo.url}/dashboard/patients/{patient_id}")
    for _ in range(3):
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#recommendation .proposal"), timeout=PAGE_TIMEOUT_S,
                 what=f"{patient_id}'s proposal")
        rec_id = browser.find_element(By.CSS_SELECTOR, "#recommendation .proposal").get_attribute("data-recommendation")
        reason = browser.find_element(By.CSS_SELECTOR, "#recommendation input.reason")
        reason.clear()
        reason.send_keys(comment)
        browser.find_element(By.CSS_SELECTOR, f"#recommendation button.{button}").click()
        row = f'#recommendations tr[data-recommendation="{rec_id}"] .rec-status'
        outcome = wait_for(browser, lambda d, row=row: (d.find_elements(By.CSS_SELECTOR, row) and text_of(d, row) == status and "done")
                           or browser.execute_script("const e = document.getElementById('decision-error'); return e && e.textContent"),
                           what=f"{status} in the list")
        if outcome == "done":
            assert console_errors(browser) == []
            return next(r for r in client.get(f"/api/v1/patients/{patient_id}/recommendations").json() if r["recommendation_id"] == rec_id)
        # only the live race may refuse a decision: a newer proposal replaced it, or the policy withdrew it
        assert "a newer recommendation replaced it" in outcome or "withdrew it" in outcome, outcome
        console_errors(browser)  # the 409 of that race, shown on the page
        browser.refresh()
    raise AssertionError(f"{patient_id}: every proposal was replaced before it could be decided")
