"""The dashboard in a real headless Debian chromium (selenium with the Debian chromedriver):
log in, open the triage list, open a patient, see a reading arrive live (no reload), accept a
recommendation, and find the decision in the audit log. Saves a screenshot of the patient page."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

from tests.api.conftest import PASSWORD
from tests.servers import services_required

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        missing = "chromium and chromedriver (Debian packages 'chromium' and 'chromium-driver') are not installed"
        if services_required():
            pytest.fail(f"MIPD_REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1300",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, failed requests
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, predicate, timeout=60.0, what=""):
    """Poll ``predicate``; elements replaced by a live re-render (stale) are looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(predicate, message=what)


def text_of(driver, selector: str) -> str:
    """The element's text, read in one step in the page (no stale references)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", selector)


def test_dashboard_end_to_end_in_chromium(api, browser, tmp_path):
    from selenium.webdriver.common.by import By

    patient_id, origin = api.serum_patient()
    device_id = api.device_for(patient_id, origin)
    api.publish_dose(device_id, origin)
    api.publish_readings(device_id, [(origin + 7200, 21.0), (origin + 4 * 3600, 15.5)])
    assert api.assimilated(patient_id, 4.0)
    rec = api.recommendation(patient_id, amount_mg=1250, interval_h=12)
    httpx.get(f"{api.live.http_url}/dashboard/static/plotly.min.js").raise_for_status()

    browser.get(f"{api.live.http_url}/dashboard/")
    wait_for(browser, lambda d: "/dashboard/login" in d.current_url, what="redirect to the login page")
    browser.find_element(By.ID, "username").send_keys("clin-a")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "submit").click()

    row = f'#triage tr[data-patient="{patient_id}"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), what="the patient in the triage list")
    cells = text_of(browser, row)
    assert "%" in cells and "ago" in cells  # risk and time since the last reading
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, row).click() or True, what="click the patient")

    wait_for(browser, lambda d: d.current_url.endswith(f"/dashboard/patients/{patient_id}"), what="the patient page")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#readings tr.reading")) == 2, what="two readings")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#panel-0 .main-svg"), what="the plotly chart")
    wait_for(browser, lambda d: d.execute_script(
        "return document.getElementById('panel-0').data.some(t => (t.name || '').startsWith('recommended'))"), what="forecasts")
    assert browser.execute_script("return typeof Plotly") == "object"  # served by the app, not a CDN
    browser.execute_script("window.__not_reloaded = true")
    wait_for(browser, lambda d: d.find_element(By.ID, "live").get_attribute("class") == "live-dot on", what="event stream")

    api.publish_readings(device_id, [(time.time() - 60, 12.75)])
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#readings tr.reading")) == 3, what="the live reading")
    assert "12.75" in text_of(browser, "#readings tr.reading")  # newest first
    assert browser.execute_script("return window.__not_reloaded") is True

    proposal = f'#recommendation .proposal[data-recommendation="{rec.recommendation_id}"]'
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{proposal} input.reason").send_keys("trough below target") or True,
             what="type the reason")
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{proposal} button.accept").click() or True, what="click accept")
    rec_row = f'#recommendations tr[data-recommendation="{rec.recommendation_id}"]'
    wait_for(browser, lambda d: text_of(d, f"{rec_row} .rec-status") == "accepted", what="accepted")
    wait_for(browser, lambda d: "1250 mg q12h" in text_of(d, "#regimen"), what="the new regimen")
    assert api.live.db.regimen(patient_id).recommendation_id == rec.recommendation_id
    screenshot = tmp_path / "patient-page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")

    browser.find_element(By.LINK_TEXT, "Audit log").click()
    entry = '#audit tr[data-action="accept-recommendation"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, entry), what="the decision in the audit log")
    text = text_of(browser, entry)
    assert patient_id in text and "clin-a" in text and rec.hash[:16] in text and "trough below target" in text
