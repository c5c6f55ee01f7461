"""A real headless Chromium driven by Selenium, offline: Debian's chromium and chromedriver, passed by path,
so Selenium Manager never looks for (or downloads) a browser or driver."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--mute-audio"]


def start(profile: Path, width: int = 1400, height: int = 900):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` (its `setup-test` step) installs Debian's chromium and chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never reach for the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ARGS + [f"--window-size={width},{height}", f"--user-data-dir={profile}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def severe(driver) -> list[dict]:
    """Console errors since the last call (the log is drained by reading it)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, path: Path, full_page: bool = False) -> Path:
    if full_page:
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 120, 6000))
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
