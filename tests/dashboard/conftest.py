"""The browser fixtures (`browser`, `open_page`, `service`) for every browser test of the dashboard."""

from __future__ import annotations

from tests.dashboard.test_dashboard_browser import browser, open_page, service  # noqa: F401
