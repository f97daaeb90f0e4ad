"""The console in a real browser: Debian's chromium, headless, driven through chromium-driver.

Sign in, submit a job from the form, watch it finish, open its page, then replay a dead letter from the
dead-letter page; every assertion is on text a person sees. Screenshots of each page are saved under
test-artifacts/console/ (and, with ALTO_SCREENSHOTS_TO_DOCS=1, to docs/console/ for the README).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, anthropic_config, wait_terminal

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not "
                                "installed (make test installs them with apt-get when it runs as root)")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    out = [ROOT / "test-artifacts" / "console"]
    if os.environ.get("ALTO_SCREENSHOTS_TO_DOCS") == "1":
        out.append(ROOT / "docs" / "console")
    for folder in out:
        folder.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(folder / f"{name}.png"))


def until(driver, text: str, timeout: float = 20.0) -> None:
    """Until `text` is visible on the page."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while text not in driver.find_element(By.TAG_NAME, "body").text:
        assert time.monotonic() < deadline, f"never saw {text!r} on the page:\n{driver.find_element(By.TAG_NAME, 'body').text}"
        time.sleep(0.1)


def test_sign_in_submit_watch_open_and_replay_a_dead_letter(live, browser):
    from selenium.webdriver.common.by import By

    fake = FakeAnthropic(FaultPlan(script=["ok", "500", "ok"], latency_s=0.3))
    with ServerThread(fake) as srv:
        app, url = live(anthropic_config(srv.url, max_attempts=1, in_process_wait_s=0))
        b = browser
        b.get(url + "/")
        until(b, "Sign in")
        b.find_element(By.ID, "api-key").send_keys("not-a-key")
        b.find_element(By.ID, "signin").click()
        until(b, "That key was not accepted")
        b.find_element(By.ID, "api-key").clear()
        b.find_element(By.ID, "api-key").send_keys(KEYS["acme"])
        shot(b, "signin")
        b.find_element(By.ID, "signin").click()
        until(b, "Jobs")
        b.get(url + "/#/submit")
        until(b, "Submit a job")
        b.find_element(By.ID, "s-prompt").send_keys("What does the circuit breaker do?")
        b.find_element(By.ID, "s-task").send_keys("support")
        shot(b, "submit")
        b.find_element(By.ID, "s-submit").click()
        until(b, "Waiting for the model")  # the job page, while it runs
        until(b, "succeeded")
        until(b, "Fake answer")
        assert "Prompt assembly" in b.page_source and "answer-with-citations@1" in b.find_element(By.TAG_NAME, "body").text
        shot(b, "job")
        b.get(url + "/#/jobs")
        until(b, "support")
        shot(b, "jobs")

        h = {"Authorization": f"Bearer {KEYS['acme']}"}
        with httpx.Client(base_url=url, headers=h) as c:
            r = c.post("/v1/jobs", json={"prompt": "This one meets a 500"})
            dead = wait_terminal(c, r.json()["status_url"], h)
            assert dead["status"] == "dead_lettered"
            b.get(url + "/#/dlq")
            until(b, dead["job_id"])
            until(b, "attempt budget exhausted")
            shot(b, "dead-letters")
            b.find_element(By.CSS_SELECTOR, "#dlq button.replay").click()
            until(b, "No dead letters.")
            assert wait_terminal(c, f"/v1/jobs/{dead['job_id']}", h)["status"] == "succeeded"
        b.get(url + f"/#/jobs/{dead['job_id']}")
        until(b, "succeeded")
        until(b, "transient")  # its attempts: the dead-lettered one, then the replayed call
        b.get(url + "/#/costs")
        until(b, "Spend per day and model")
        until(b, "fake-sonnet")
        shot(b, "spend")
        b.get(url + "/#/providers")
        until(b, "closed")
        shot(b, "providers")
