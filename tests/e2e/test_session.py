"""The idle-session warning in a real browser: "Stay signed in" dismisses it and restarts the
countdown; a page left idle past the timeout goes back to the sign-in form.

The server records activity at most once a minute, so whether the keep-alive extends the
server-side session shows only with timeouts of minutes; this test stays with the page's side."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page

from tests.conftest import RunningAppliance
from tests.e2e.conftest import expect, user_page


def test_stay_signed_in_dismisses_the_warning_and_idling_signs_out(
    start_app: Callable[..., RunningAppliance], new_page: Callable[[], Page]
) -> None:
    app = start_app(session_idle_timeout_s=6)
    page = user_page(new_page, app, "staff")
    page.goto(f"{app.url}/workspace")
    warning = page.locator("#session-warning")
    expect(warning).to_be_visible(timeout=10_000)

    warning.get_by_role("button", name="Stay signed in").click()

    expect(warning).to_be_hidden()
    page.wait_for_timeout(1_000)
    expect(warning).to_be_hidden()  # the countdown restarted from the click
    # Left alone, the warning comes back, counts down, and the page leaves for the sign-in form.
    expect(warning).to_be_visible(timeout=10_000)
    expect(page).to_have_url(re.compile(r"/login"), timeout=15_000)
