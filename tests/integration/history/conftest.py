"""The signed-in browser fixture of the auth suite, shared here."""

from tests.integration.auth.conftest import browser_for  # noqa: F401  (a fixture)
