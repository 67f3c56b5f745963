"""Browser tests of the workbench page: Playwright driving Debian's chromium."""
