"""The dashboard under its Content-Security-Policy in a real headless chromium: every page
loads (the patient page with its plotly chart drawn) and the browser reports no CSP violation
(``securitypolicyviolation``, collected from before the page's first script) and no error in
its console (a failed request, such as a missing favicon, would be one)."""

from __future__ import annotations

import pytest

from mipdstream.api.auth import SESSION_COOKIE
from tests.api.test_dashboard_browser import browser, wait_for  # noqa: F401 (the fixture)

# Runs before any script of every page (CDP, outside the page's CSP), so no violation is missed.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
  `${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber} ${e.sample || ''}`));
"""


def violations(driver) -> list[str]:
    return driver.execute_script("return window.__csp || null")


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture
def patient_with_chart(api):
    return api.assimilated_patient()


def test_pages_load_without_csp_violations(api, browser, patient_with_chart):  # noqa: F811 (the fixture)
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
    base = api.live.http_url
    browser.get(f"{base}/favicon.ico")  # on the origin, to set the session cookie there
    # (headless chromium fetches no favicon for a page by itself, so the icon is asked for here)
    assert [m for m in console_errors(browser) if "Failed to load resource" in m] == []
    browser.add_cookie({"name": SESSION_COOKIE, "value": api.tokens["clin-a"], "path": "/", "sameSite": "Strict"})
    pages = {"login": ("/dashboard/login", "#username"),
             "triage": ("/dashboard/", f'#triage tr[data-patient="{patient_with_chart}"]'),
             "patient": (f"/dashboard/patients/{patient_with_chart}", ".js-plotly-plot .main-svg"),
             "audit": ("/dashboard/audit", "#audit tbody tr")}
    found = {}
    for name, (path, loaded) in pages.items():
        browser.get(base + path)
        assert violations(browser) is not None  # the recorder ran before the page
        try:
            wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, loaded), timeout=20, what=f"the {name} page's content")
            missing = []
        except TimeoutException:
            missing = [f"{loaded} never appeared"]
        found[name] = missing + violations(browser)
    errors = console_errors(browser)
    assert found == {name: [] for name in pages}, found
    assert not errors, errors
