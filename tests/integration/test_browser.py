"""The dashboard and the widget in a real browser: Debian's Chromium, driven by Playwright.

Orders go in through Kafka while the page is open; the page must change without a reload.
Screenshots go to the test's temporary folder, or with GROUPBUY_SCREENSHOTS=docs to
`docs/dashboard.png`, `docs/dashboard-phone.png` and `docs/widget.png`, which the README
shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from infra.settings import Settings
from tests.support.builders import campaign, order
from tests.support.kafka_io import publish_orders, wait_for
from tests.support.pipeline import order_pipeline
from tests.support.read_models import projected_version

# Without these, Chromium keeps calling Google's hosts, which this network refuses.
QUIET = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-gpu",
]
WAIT_MS = 20_000  # for the page to show what was projected


def chromium_path() -> str:
    """GROUPBUY_CHROMIUM, else Debian's chromium on the PATH (`make install` installs it)."""
    found = os.environ.get("GROUPBUY_CHROMIUM") or shutil.which("chromium")
    if not found:
        message = "no Chromium: apt-get install chromium, or set GROUPBUY_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", *QUIET]
        )
        try:
            yield launched
        finally:
            launched.close()


def test_the_dashboard_and_the_widget_show_the_price_falling_without_a_reload(
    settings: Settings, api: httpx.Client, browser: Browser, unique: str, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("GROUPBUY_SCREENSHOTS") or tmp_path)
    campaign_id = f"screen-{unique}"
    definition = campaign(campaign_id, max_per_buyer=None, title="Espresso grinder, 64 mm burrs")
    with order_pipeline(settings, definition):
        wait_for(lambda: projected_version(settings) == 1, what="the opening projected")
        desktop = browser.new_page(viewport={"width": 1280, "height": 800})
        desktop.goto(f"{api.base_url}/")
        card = desktop.locator(f'article[data-campaign="{campaign_id}"]')
        card.locator(".price").filter(has_text="10.00").wait_for(timeout=WAIT_MS)
        before = card.locator(".bar").evaluate("bar => bar.style.width")
        phone = browser.new_page(viewport={"width": 390, "height": 700})
        phone.goto(f"{api.base_url}/widget.html?campaign={campaign_id}")
        badge = phone.locator(".groupbuy-widget .price")
        badge.filter(has_text="10.00").wait_for(timeout=WAIT_MS)

        publish_orders(settings, [order(campaign_id, "site-a", "b1", 12, None)])
        card.locator(".committed").filter(has_text="12").wait_for(timeout=WAIT_MS)
        phone.locator(".groupbuy-widget .next").filter(has_text="8 more units").wait_for(
            timeout=WAIT_MS
        )
        publish_orders(settings, [order(campaign_id, "site-b", "b2", 9, None)])
        card.locator(".price").filter(has_text="8.00").wait_for(timeout=WAIT_MS)
        badge.filter(has_text="8.00").wait_for(timeout=WAIT_MS)
        navigations = desktop.evaluate("performance.getEntriesByType('navigation').length")
        card.locator("summary").click()
        card.locator(".sites li").nth(1).wait_for(timeout=WAIT_MS)
        desktop.wait_for_timeout(800)  # the bars' 0.6 s transition, for the screenshot only
        desktop.screenshot(path=str(shots / "dashboard.png"))
        phone.screenshot(path=str(shots / "widget.png"))
        after = card.locator(".bar").evaluate("bar => bar.style.width")
        sites = card.locator(".sites li").all_inner_texts()
        # The dashboard on a phone: the card fits the screen, nothing scrolls sideways.
        small = browser.new_page(viewport={"width": 390, "height": 844})
        small.goto(f"{api.base_url}/")
        small_card = small.locator(f'article[data-campaign="{campaign_id}"]')
        small_card.locator(".price").filter(has_text="8.00").wait_for(timeout=WAIT_MS)
        overflow = small.evaluate("document.documentElement.scrollWidth - innerWidth")
        small_card.locator("summary").click()
        small_card.locator(".sites li").nth(1).wait_for(timeout=WAIT_MS)
        small.wait_for_timeout(800)
        small.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)

    assert navigations == 1  # one page load: everything after it came over the stream
    assert (before, after) != ("", "")
    assert before != after  # the progress bar moved
    assert sites == ["site-a: 12", "site-b: 9"]
    assert overflow <= 0
    assert (shots / "dashboard.png").stat().st_size > 0
