"""Fixtures shared with the identity tests: signed-in browsers."""

from tests.integration.auth.conftest import browser_for  # noqa: F401 (a fixture)
