"""The dashboard in a real headless Chromium: health, numbers, charts, search, API keys, XSS.

The app runs as a real server (``afdb serve``, uvicorn) on a free port over an embedded database
with the demo data and the hashing embedder; Chromium is driven through chromedriver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import prepare
from autoforge_data.db.engine import Database
from autoforge_data.services import apikeys
from autoforge_data.services import prompts as svc
from autoforge_data.services.demo import load_demo
from conftest import settings_for
from servers import free_port

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium/chromedriver missing: run scripts/ensure-chromium (make test-deps does)",
)
XSS_TITLE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> XSS release notes'
WAIT = 20.0
EMPTY = "\u2013"  # what the page shows before the first numbers arrive


@dataclass
class Served:
    """A running `afdb serve` and what the tests need to know about it."""

    url: str
    proc: subprocess.Popen[bytes]
    read_key: str
    log: Path
    auth: str


def _serve(tmp: Path, auth: str) -> Served:
    """Prepare an embedded database (demo data + an XSS prompt), then start `afdb serve`."""
    settings = settings_for("embedded", tmp)
    with Database(settings) as db:
        prepare(db)
        load_demo(db)
        owner = svc.create_user(db, "mallory@example.com", "mallory")
        svc.create_prompt(db, owner.id, XSS_TITLE, "<script>window.__xss=3</script> release notes")
        key = apikeys.create_key(db, "dashboard-test", "read").secret
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AFDB_")
    } | {
        "AFDB_ENV": "dev",
        "AFDB_DATA_DIR": str(tmp / "data"),
        "AFDB_API_AUTH": auth,
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp / f"serve-{auth}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("afdb")), "serve", "--port", str(port)],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", proc, key, log, auth)
    _wait_search_ready(served)
    return served


def _wait_search_ready(served: Served) -> None:
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {served.read_key}"}
    while True:
        assert served.proc.poll() is None, served.log.read_text()
        try:
            r = httpx.get(f"{served.url}/api/v1/search", params={"q": "warm"}, headers=headers)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, served.log.read_text()
        time.sleep(0.2)


def _stop(served: Served) -> None:
    served.proc.terminate()
    try:
        served.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(params=["off", "required"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """The app served without and with API keys."""
    server = _serve(tmp_path, request.param)
    try:
        yield server
    finally:
        _stop(server)


def _wait_for(driver: Any, predicate: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(predicate, message=what)


def _texts(driver: Any, selector: str) -> list[str]:
    """Text of every element matching ``selector``, read in one script (no stale handles)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"
    return list(driver.execute_script(script, selector))


def test_dashboard_shows_health_numbers_and_ranked_results(browser: Any, served: Served) -> None:
    """Load /, see health and numbers, search (with a key when asked), see ranked results;
    a prompt whose title is markup shows as text and runs nothing."""
    from selenium.webdriver.common.by import By

    d = browser
    d.get("about:blank")
    d.get_log("browser")  # drain what earlier pages (of stopped servers) logged
    d.get(served.url + "/")
    assert d.find_element(By.ID, "status").text in ("ok", "degraded")
    rows = "#health tbody tr"
    script = f"return [...document.querySelectorAll('{rows}')].map(r => r.dataset.component)"
    assert {"database", "fts", "vector", "cache"} <= set(d.execute_script(script))
    # the first poll of /api/v1/stats fills the numbers and draws the charts
    _wait_for(d, lambda drv: _texts(drv, "#db-size") != [EMPTY], "stats never loaded")
    # a chart needs a window with statements in it: the first poll may come before any
    _wait_for(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, "#chart-db polyline"), "no chart")
    _wait_for(d, lambda drv: _texts(drv, "#req-p99")[0].endswith("ms"), "no request latency")

    key_form = d.find_element(By.ID, "key-form")
    needs_key = "hidden" not in (key_form.get_attribute("class") or "")
    assert needs_key == (served.auth == "required")
    d.find_element(By.ID, "q").send_keys("write release notes from pull requests")
    if needs_key:  # without a key the API says 401 and the page says so
        d.find_element(By.CSS_SELECTOR, "#search-form button").click()
        _wait_for(d, lambda drv: "key" in _texts(drv, "#search-message")[0].lower(), "no message")
        assert not _texts(d, "#results li")
        d.find_element(By.ID, "api-key").send_keys(served.read_key)
        d.find_element(By.CSS_SELECTOR, "#key-form button").click()
    d.find_element(By.CSS_SELECTOR, "#search-form button").click()
    _wait_for(d, lambda drv: len(_texts(drv, "#results li")) >= 3, "no results")
    ranks = _texts(d, "#results .score")
    assert ranks[0].startswith("#1 ") and ranks[1].startswith("#2 ")
    scores = [float(r.split("score ")[1].split(" ")[0]) for r in ranks]
    assert scores == sorted(scores, reverse=True)
    assert all(_texts(d, "#results .snippet"))
    _wait_for(
        d,
        lambda drv: XSS_TITLE in _texts(drv, "#results .title")
        and any(t.startswith("Release notes") for t in _texts(drv, "#results .title")),
        "titles were not filled in (or the markup title is not shown as text)",
    )
    assert d.execute_script("return window.__xss === undefined")
    assert not d.find_elements(By.CSS_SELECTOR, "#results img, #results script")
    # no script error, no CSP violation, no failed load (but the keyless search's 401)
    log = d.get_log("browser")
    errors = [e for e in log if e["level"] == "SEVERE" and "status of 401" not in e["message"]]
    assert not errors, errors
