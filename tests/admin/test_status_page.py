"""The status page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Locally the test is skipped with a reason when the browser or Playwright is
missing; under ``CI=true`` it must run, so it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.admin.admin_support import Components, admin_url, call, quick_stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "page-token-5b1e0c7d"
COLOURS = {  # the CSS variables of status.html, as the browser computes them
    "ok": "rgb(46, 125, 50)",
    "degraded": "rgb(224, 161, 0)",
    "failing": "rgb(198, 40, 40)",
    "paused": "rgb(74, 111, 165)",
}


def require_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if not missing:
        return
    reason = f"the status page test needs {' and '.join(missing)}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


# One browser for the module (starting Playwright and Chromium takes seconds), so the
# tests and the daemons they start share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def routes(tmp_path: Path) -> str:
    return (
        quick_stop(tmp_path)
        + f"""
        [admin]
        listen = "127.0.0.1:0"
        token = "{TOKEN}"

        [routes.ticks]
        source = {{ type = "timer", interval = "50ms" }}
        sinks = [{{ type = "file", path = "{tmp_path / "out.jsonl"}" }}]

        [routes.refused]
        source = {{ type = "timer", interval = "5ms", count = 2 }}
        sinks = [{{ type = "rejecting" }}]

        [routes.crm]
        source = {{ type = "timer", interval = "1s" }}
        sinks = [{{ type = "broken" }}]

        [routes.quiet]
        source = {{ type = "timer", interval = "1s" }}
        sinks = [{{ type = "file", path = "{tmp_path / "quiet.jsonl"}" }}]
    """
    )


ROWS = """rows => rows.map(row => ({
    route: row.dataset.route,
    health: row.dataset.health,
    colour: getComputedStyle(row.querySelector('.dot')).backgroundColor,
    dlq: row.cells[4].textContent,
}))"""


async def test_status_page_shows_each_route_in_its_health_colour(
    run_route, browser: Any, tmp_path: Path
) -> None:
    problems: list[str] = []
    async with run_route(routes(tmp_path), Components()) as d:
        await d.wait_for(lambda: d.services.stats["refused"].sink("rejecting").dead == 2)
        await call(d, "POST", "/api/routes/quiet/pause", token=TOKEN)
        page = await browser.new_page(viewport={"width": 1280, "height": 600})
        try:
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on(
                "console", lambda msg: problems.append(msg.text) if msg.type == "error" else None
            )
            await page.goto(f"{admin_url(d)}/#token={TOKEN}")
            await page.wait_for_selector("tr.route[data-route='ticks']", timeout=10_000)
            # A second refresh (2 s later) gives the sparklines their first segment.
            await page.wait_for_selector(
                "tr[data-route='ticks'] polyline.in[points*=' ']", timeout=10_000
            )
            rows: list[dict[str, Any]] = await page.eval_on_selector_all("tr.route", ROWS)
            fragment = await page.evaluate("location.hash")
            ready_badge = await page.text_content("#ready")
            await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
        finally:
            await page.close()

    assert problems == []  # no script error, no Content-Security-Policy violation
    assert fragment == ""  # the token left the address bar
    assert ready_badge == "not ready"  # crm's sink cannot open
    by_route = {row["route"]: row for row in rows}
    assert list(by_route) == ["ticks", "refused", "crm", "quiet"]
    expected = {"ticks": "ok", "refused": "degraded", "crm": "failing", "quiet": "paused"}
    assert {name: row["health"] for name, row in by_route.items()} == expected
    for name, health in expected.items():
        assert by_route[name]["colour"] == COLOURS[health], name
    assert by_route["refused"]["dlq"] == "2"
    screenshot = (tmp_path / "status.png").read_bytes()
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 10_000


async def test_status_page_asks_for_the_token_it_lacks(
    run_route, browser: Any, tmp_path: Path
) -> None:
    async with run_route(routes(tmp_path), Components()) as d:
        page = await browser.new_page()
        try:
            await page.goto(admin_url(d) + "/")
            await page.wait_for_selector("#login", state="visible", timeout=10_000)
            assert await page.locator("tr.route").count() == 0
            await page.fill("#token", TOKEN)
            await page.click("#login button")
            await page.wait_for_selector("tr.route[data-route='ticks']", timeout=10_000)
            assert not await page.is_visible("#login")
        finally:
            await page.close()
