"""Browser tests: the example site in headless Chromium."""
