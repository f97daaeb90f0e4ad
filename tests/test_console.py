"""The console in a real browser: Debian's chromium, headless, driven through chromium-driver.

Every page and action: signed out, sign in, the overview's charts, the jobs list (filters, paging through the
API's cursor, a workflow's steps folded under it), a workflow's timeline and its children, a job submitted from
the form and watched to its answer, dead letters grouped by error and replayed, an operator's tenant filter,
and a deferred job's reason. Assertions are on what a person sees (and, for charts, on the data Chart.js
drew). Screenshots go to test-artifacts/console/, and with ALTO_SCREENSHOTS_TO_DOCS=1 (`make screenshots`) to
docs/console/ for the documentation.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.testing.fake_anthropic import FakeAnthropic, FaultPlan, ServerThread
from tests.conftest import KEYS, anthropic_config, require_tool, wait_terminal

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ACME = {"Authorization": f"Bearer {KEYS['acme']}"}
BETA = {"Authorization": f"Bearer {KEYS['beta']}"}


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        require_tool("chromium", "Debian's chromium and chromium-driver (make test installs them with apt-get as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,1000"):
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


def text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def until(driver, wanted: str, timeout: float = 20.0) -> None:
    """Until `wanted` is visible on the page."""
    deadline = time.monotonic() + timeout
    while wanted not in text(driver):
        assert time.monotonic() < deadline, f"never saw {wanted!r} on the page:\n{text(driver)}"
        time.sleep(0.1)


def until_true(driver, script: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)):
        assert time.monotonic() < deadline, f"never true: {script}\n{text(driver)}"
        time.sleep(0.1)
    return value


def sign_in(driver, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/#/signin")
    until(driver, "Sign in")
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "signin").click()
    until(driver, "jobs ended")  # the overview, drawn


def rows(driver, table: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_signed_out_shows_no_navigation_and_a_wrong_key_is_explained(live, browser):
    from selenium.webdriver.common.by import By

    _, url = live()
    b = browser
    b.get(url + "/")
    until(b, "Sign in")
    for element in ("nav", "signout", "who"):  # before: nav { display: flex } overrode `hidden`
        assert not b.find_element(By.ID, element).is_displayed(), element
    b.find_element(By.ID, "api-key").send_keys("not-a-key")
    b.find_element(By.ID, "signin").click()
    until(b, "That key was not accepted")
    shot(b, "signin")
    b.find_element(By.ID, "api-key").clear()
    b.find_element(By.ID, "api-key").send_keys(KEYS["acme"])
    b.find_element(By.ID, "signin").click()
    until(b, "Overview")
    assert b.find_element(By.ID, "nav").is_displayed()
    assert "tenant acme" in text(b)
    b.find_element(By.ID, "signout").click()
    until(b, "Sign in")
    assert not b.find_element(By.ID, "nav").is_displayed()


def test_the_overview_charts_spend_tokens_outcomes_latency_and_savings(live, browser):
    fake = FakeAnthropic(FaultPlan(script=["ok", "ok", "400", "ok"], latency_s=0.1))
    with ServerThread(fake) as srv:
        _, url = live(anthropic_config(srv.url, max_attempts=1))
        with httpx.Client(base_url=url, headers=ACME) as c:
            for n, task in enumerate(["support", "billing", "support", "support"]):
                job = c.post("/v1/jobs", json={"prompt": f"question {n}", "task": task}).json()
                wait_terminal(c, job["status_url"], ACME)
        b = browser
        sign_in(b, url, KEYS["acme"])
        until(b, "jobs ended")
        drawn = until_true(
            b,
            """const c = ['c-spend', 'c-tokens', 'c-status', 'c-latency', 'c-savings']
            .map((id) => Chart.getChart(id)); return c.every(Boolean) && c.map((x) => x.data.datasets.map((d) =>
            [d.label, d.data.reduce((a, v) => a + (v || 0), 0)]));""",
        )
    spend, tokens, status, latency, savings = ({label: total for label, total in chart} for chart in drawn)
    assert set(spend) == {"fake-sonnet"}
    assert spend["fake-sonnet"] > 0
    assert set(tokens) == {"support", "billing"}
    assert all(v > 0 for v in tokens.values())
    assert status == {"failed": 1, "succeeded": 3}
    assert set(latency) == {"p50", "p90", "p99"}
    assert 0 < latency["p50"] <= latency["p99"]
    assert set(savings) == {"prompt cache", "response cache", "batch lane"}
    assert b.find_element("id", "t-jobs").text == "4"
    assert b.find_element("id", "t-ok").text == "75.0%"
    shot(b, "overview")


def test_the_jobs_list_filters_pages_and_folds_a_workflows_steps(live, browser):
    from selenium.webdriver.common.by import By

    from tests.test_workflows import document

    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        flow = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": document(3, 2500)}}).json()
        assert wait_terminal(c, flow["status_url"], ACME)["status"] == "succeeded"
        plain = [
            c.post(
                "/v1/jobs",
                json={
                    "prompt": f"question {n}" + (" about refunds" if n == 7 else ""),
                    "task": "billing" if n % 3 == 0 else "support",
                },
            ).json()["job_id"]
            for n in range(30)
        ]
        wait_terminal(c, f"/v1/jobs/{plain[-1]}", ACME)
    b = browser
    sign_in(b, url, KEYS["acme"])
    b.get(url + "/#/jobs?size=25")
    until(b, plain[-1])
    assert len(rows(b, "jobs")) == 25
    assert "-s0r0n" not in text(b)  # a workflow's steps are folded under it
    b.find_element(By.ID, "f-live").click()  # hold the first page still while paging
    b.find_element(By.ID, "older").click()
    until(b, "page 2")
    second = rows(b, "jobs")
    assert len(second) == 6
    assert any(flow["job_id"] in r for r in second)  # 31 top-level jobs: 25, then 6
    b.find_element(By.CSS_SELECTOR, f"button.expand[data-parent='{flow['job_id']}']").click()
    until(b, f"{flow['job_id']}-s0r0n2")
    assert len(rows(b, "jobs")) == 6 + 4  # three parts and the summary, under their parent
    shot(b, "jobs")
    b.find_element(By.ID, "newer").click()
    until(b, "page 1")
    assert rows(b, "jobs")[0].startswith(plain[-1])
    b.find_element(By.ID, "f-task").send_keys("billing")
    until_true(b, "return document.querySelectorAll('#jobs tbody tr').length === 10")
    assert all("billing" in r for r in rows(b, "jobs"))
    assert "task=billing" in b.current_url
    b.find_element(By.ID, "f-task").clear()
    b.find_element(By.ID, "f-q").send_keys("REFUNDS")
    until_true(b, "return document.querySelectorAll('#jobs tbody tr').length === 1")
    assert rows(b, "jobs")[0].startswith(plain[7])
    b.get(url + "/#/jobs?steps=1&size=100")  # the filters live in the URL: a shared link opens the same view
    until(b, f"{flow['job_id']}-s1r0n0")
    assert b.find_element(By.ID, "f-steps").is_selected()
    assert len(rows(b, "jobs")) == 31 + 4


def test_a_workflows_page_shows_its_steps_and_children_on_a_timeline(live, browser):
    from selenium.webdriver.common.by import By

    from tests.test_workflows import document

    _, url = live()
    with httpx.Client(base_url=url, headers=ACME) as c:
        flow = c.post("/v1/jobs", json={"workflow": "summarize", "inputs": {"document": document(4, 2500)}}).json()
        view = wait_terminal(c, flow["status_url"], ACME)
    b = browser
    sign_in(b, url, KEYS["acme"])
    b.get(url + f"/#/jobs/{flow['job_id']}")
    until(b, "Children (5)")
    steps = b.find_element(By.ID, "steps").text
    assert "parts" in steps
    assert "4 children: 4 succeeded" in steps
    assert "summary" in steps
    children = rows(b, "children")
    assert len(children) == 5
    assert all("succeeded" in r for r in children)
    assert "parts · #3" in children[3]
    assert "summary · #0" in children[4]
    spans = b.execute_script("return [...document.querySelectorAll('#children .span')].map((s) => s.style.width)")
    assert len(spans) == 5
    assert all(s for s in spans)
    assert "Not assembled yet" not in text(b)
    assert view["result"][:30] in text(b)
    shot(b, "workflow")
    b.find_element(By.LINK_TEXT, f"{flow['job_id']}-s0r0n1").click()
    until(b, "A step of workflow")
    b.find_element(By.CSS_SELECTOR, "#parent a").click()
    until(b, "Children (5)")


def test_submit_from_the_form_and_watch_the_answer(live, browser):
    from selenium.webdriver.common.by import By

    fake = FakeAnthropic(FaultPlan(latency_s=0.5))
    with ServerThread(fake) as srv:
        _, url = live(anthropic_config(srv.url))
        b = browser
        sign_in(b, url, KEYS["acme"])
        b.get(url + "/#/submit")
        until(b, "Submit a job")
        b.find_element(By.ID, "s-prompt").send_keys("What does the circuit breaker do?")
        b.find_element(By.ID, "s-task").send_keys("support")
        shot(b, "submit")
        b.find_element(By.ID, "s-submit").click()
        until(b, "Waiting for the model")  # the job page, while it runs
        until(b, "Fake answer")
        assert "succeeded" in text(b)
        assert "answer-with-citations@1" in text(b)
        shot(b, "job")
        b.get(url + "/#/costs")
        until(b, "Spend since")
        assert "fake-sonnet" in text(b)
        assert "TOTAL" in text(b)  # th is upper-cased by the stylesheet
        shot(b, "spend")
        b.get(url + "/#/providers")
        until(b, "closed")
        shot(b, "providers")


def test_dead_letters_are_grouped_by_error_and_a_group_is_replayed(live, browser):
    from selenium.webdriver.common.by import By

    fake = FakeAnthropic(FaultPlan(script=["500", "500", "529", "ok", "ok", "ok"]))
    with ServerThread(fake) as srv:
        _, url = live(anthropic_config(srv.url, max_attempts=1, in_process_wait_s=0))
        dead = []
        with httpx.Client(base_url=url, headers=ACME) as c:
            for n in range(3):
                job = c.post("/v1/jobs", json={"prompt": f"meets an error {n}"}).json()
                dead.append(wait_terminal(c, job["status_url"], ACME))
        assert [d["status"] for d in dead] == ["dead_lettered"] * 3
        b = browser
        sign_in(b, url, KEYS["acme"])
        b.get(url + "/#/dlq")
        until(b, "3 dead letters in 2 group(s) by error")
        counts = [e.text for e in b.find_elements(By.CSS_SELECTOR, "#dlq details summary .count")]
        assert counts == ["2", "1"]  # the two 500s share a group, whatever their ids
        shot(b, "dead-letters")
        b.find_element(By.CSS_SELECTOR, "#dlq details[data-group='0'] button.replay-group").click()
        until(b, "1 dead letters in 1 group(s)")
        with httpx.Client(base_url=url, headers=ACME) as c:
            replayed = [wait_terminal(c, f"/v1/jobs/{d['job_id']}", ACME)["status"] for d in dead[:2]]
        assert replayed == ["succeeded", "succeeded"]


def test_an_operator_sees_every_tenant_and_narrows_to_one(live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, url = live(env={"ALTO_OPERATOR_KEYS": "ops-key"})
    with httpx.Client(base_url=url) as c:
        mine = c.post("/v1/jobs", json={"prompt": "acme's question"}, headers=ACME).json()["job_id"]
        theirs = c.post("/v1/jobs", json={"prompt": "beta's question"}, headers=BETA).json()["job_id"]
        wait_terminal(c, f"/v1/jobs/{theirs}", BETA)
    b = browser
    sign_in(b, url, "ops-key")
    assert "operator" in b.find_element(By.ID, "who").text
    b.get(url + "/#/jobs")
    until(b, theirs)
    assert mine in text(b)
    assert "TENANT" in b.find_element(By.CSS_SELECTOR, "#jobs thead").text.upper()
    Select(b.find_element(By.ID, "f-tenant")).select_by_value("beta")
    until_true(b, f"return !document.body.innerText.includes('{mine}')")
    assert theirs in text(b)
    shot(b, "operator")
    b.get(url + "/#/submit")
    until(b, "An operator's key submits no jobs")


def test_a_deferred_job_says_what_it_waits_for(live, browser):
    fake = FakeAnthropic(FaultPlan(script=["529"]))
    with ServerThread(fake) as srv:
        _, url = live(
            anthropic_config(
                srv.url,
                max_attempts=1,
                in_process_wait_s=0,
                breaker={"failure_threshold": 1, "cooldown_s": 120, "cache_s": 0},
            )
        )
        with httpx.Client(base_url=url, headers=ACME) as c:
            opener = c.post("/v1/jobs", json={"prompt": "opens the circuit"}).json()
            wait_terminal(c, opener["status_url"], ACME)
            held = c.post("/v1/jobs", json={"prompt": "held by it"}).json()
            deadline = time.monotonic() + 15
            while c.get(held["status_url"]).json().get("waiting") is None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        b = browser
        sign_in(b, url, KEYS["acme"])
        b.get(url + f"/#/jobs/{held['job_id']}")
        until(b, "waiting: ")
        assert "circuit" in text(b)
        assert "next try in" in text(b)
        b.get(url + "/#/jobs")
        until(b, "waiting: ")


def test_the_vendored_chart_library_is_the_pinned_release_with_its_licence():
    """make console-vendor copies it from the version package.json pins; a copy edited by hand, or left behind
    when the pin moves, fails here."""
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["chart.js"]
    vendored = ROOT / "core" / "console" / "vendor"
    assert f"Chart.js v{pinned}\n" in (vendored / "chart.umd.min.js").read_text()[:200]
    assert (vendored / "chart.js.LICENSE.md").read_text().startswith("The MIT License")
    installed = ROOT / "node_modules" / "chart.js"
    if not installed.exists():
        require_tool("node_modules/chart.js", "run `npm ci`")
    assert (vendored / "chart.umd.min.js").read_bytes() == (installed / "dist" / "chart.umd.min.js").read_bytes()
    assert json.loads((installed / "package.json").read_text())["version"] == pinned
