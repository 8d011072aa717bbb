"""The app in a real browser: Streamlit served as in `make run`, driven through Debian's chromium.

What a user does: open the page, pick a preset, see the chart change, drag a lever and see the
chart again, open the map (drawn offline). The time from the lever change to the updated chart
is measured and printed; the screenshots and timings go to ``$DIFFUSIM_ARTIFACTS`` (default
``/tmp/diffusim-browser``), outside the repository.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("DIFFUSIM_ARTIFACTS", "/tmp/diffusim-browser"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (Debian package chromium; .ci/run installs "
                       "it)"),
]

# The Shares view's right-hand chart (US, China, EU shares of AI use); its key is chart.compare
# (chart.compare.draft while the first run of an ensemble is shown).
CHART_DATA = """() => {
  const el = document.querySelector('[class*="st-key-chart-compare"] .js-plotly-plot');
  if (!el || !el.data) return null;
  return JSON.stringify(el.data.map(d => d.y));
}"""
NO_DRAFT = "() => !document.querySelector('[class*=\"-draft\"]')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    log = (ARTIFACTS / "streamlit.log")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"streamlit did not start; see {log}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        fh.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def wait_changed(page, before: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(f"(b) => {{ const v = ({CHART_DATA})(); return v && v !== b; }}",
                           arg=before, timeout=timeout_ms, polling=10)


def test_preset_and_slider_update_the_chart_and_maps_draw_offline(server, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    external = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(server) else None)
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_function(CHART_DATA, timeout=120_000)
    page.wait_for_function(NO_DRAFT, timeout=120_000)
    assert page.locator('[data-testid="stException"]').count() == 0

    # pick a preset: the chart changes
    before = page.evaluate(CHART_DATA)
    page.locator(".st-key-ui-preset").click()
    page.get_by_role("option", name="export controls", exact=True).click()
    wait_changed(page, before)
    page.wait_for_function(NO_DRAFT, timeout=60_000)
    export = page.locator('.st-key-levers-export_controls [data-testid="stSliderThumbValue"]')
    assert export.inner_text().strip() != "0.00", "the preset's export controls are loaded"
    shot = ARTIFACTS / "app_export_controls.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")

    # move a lever one step: time until the chart shows the new run, and until the bands are in
    slider = page.locator('.st-key-levers-api_price_decline input[type="range"]')
    first, final = [], []
    for key in ("ArrowRight",) * 4:  # a new value each time (no cache hit)
        page.wait_for_timeout(500)
        before = page.evaluate(CHART_DATA)
        slider.focus()
        t0 = time.perf_counter()
        page.keyboard.press(key)
        wait_changed(page, before)
        first.append(time.perf_counter() - t0)
        page.wait_for_function(NO_DRAFT, timeout=60_000)
        final.append(time.perf_counter() - t0)
    timings = {"slider_to_first_chart_s": [round(x, 3) for x in first],
               "slider_to_full_ensemble_s": [round(x, 3) for x in final],
               "median_first_s": round(statistics.median(first), 3),
               "median_full_s": round(statistics.median(final), 3)}
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"timings: {timings}")
    shot = ARTIFACTS / "app_after_slider.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert statistics.median(first) < 2.0, f"slider to chart too slow: {timings}"

    # the map view draws every shape without fetching anything from the internet
    page.locator(".st-key-ui-view button", has_text="Map").first.click()
    page.wait_for_function(
        "() => document.querySelectorAll('path.choroplethlocation').length >= 300",
        timeout=60_000)
    page.wait_for_function(NO_DRAFT, timeout=60_000)
    shot = ARTIFACTS / "app_map.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert not external, f"the page fetched from outside the app: {external[:5]}"
    page.close()
