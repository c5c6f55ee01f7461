"""Re-take the report screenshots of docs/report.md and the README from the demo workspace (`make demo`).

    .venv/bin/python docs/make_report_screenshots.py [--workspace ceta2vec-workspace] [--model tiny@3]

Opens the model's report folder (reports/<model>/, written by `make demo` or `ceta2vec report`) in
headless Chromium and writes docs/report-verdict-demo.png (the first screen of index.html) and
docs/unit-page-demo.png (the first screen of the first k-means unit page), and
docs/report-features-demo.png (the section "What the filters and units respond to"). The tests write
docs/report-verdict.png and docs/unit-page.png from a tiny synthetic workspace.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import headless_chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(ROOT / "ceta2vec-workspace"))
    parser.add_argument("--model", default="tiny@3")
    args = parser.parse_args()
    folder = Path(args.workspace) / "reports" / (re.sub(r"[^A-Za-z0-9._-]+", "-", args.model).strip("-.") or "model")
    pages = sorted((folder / "units").glob("kmeans-*.html")) or sorted((folder / "units").glob("*.html"))
    if not (folder / "index.html").is_file() or not pages:
        raise SystemExit(f"no report with unit pages in {folder}: run `make demo` or `ceta2vec report` first")
    with tempfile.TemporaryDirectory() as profile:
        driver = headless_chromium.start(Path(profile), 1400, 900)
        try:
            for page, name in ((folder / "index.html", "report-verdict-demo.png"), (pages[0], "unit-page-demo.png")):
                driver.get(page.as_uri())
                driver.execute_script("return document.readyState")
                headless_chromium.screenshot(driver, ROOT / "docs" / name)
            driver.get((folder / "index.html").as_uri() + "#sec-features")
            driver.execute_script("document.getElementById('sec-features').scrollIntoView()")
            headless_chromium.screenshot(driver, ROOT / "docs" / "report-features-demo.png")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
