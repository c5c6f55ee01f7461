"""Re-take the Prefect UI screenshots of docs/pipeline.md from a real pipeline run of the bundled sample.

    .venv/bin/python docs/make_screenshots.py                       # own `prefect server start`, run into /tmp
    .venv/bin/python docs/make_screenshots.py --api-url http://127.0.0.1:4200/api --flow-run-id <id>

Starts `prefect server start` on a free port (throwaway PREFECT_HOME) unless --api-url is given,
runs `ceta2vec run data/sample ...` (tiny preset, a few steps) against it unless --flow-run-id is
given, then opens the run's page and its Artifacts tab in headless Chromium and writes
docs/prefect-ui-pipeline.png and docs/prefect-ui-artifacts.png.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PIPELINE = ["data/sample", "--labels", "data/sample/labels.csv", "--label-column", "species", "--site", "sample",
            "--chunks", "2", "--steps-per-chunk", "10", "--bootstrap", "20", "--units-k", "20", "--media-points", "60"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api_url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"no Prefect server answered at {api_url}")


def latest_pipeline_run(api_url: str) -> str:
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["pipeline"])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    if not runs:
        raise SystemExit("no pipeline run on that server")
    return str(runs[0].id)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shoot(driver, url: str, must_show: list[str], out: Path, settle_s: float = 4.0, tab: str | None = None) -> None:
    """Open `url` (and click its tab named `tab`), wait until every text of `must_show` is on the
    page (the UI renders client-side), save a PNG."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import TimeoutException

    driver.get(url)
    if tab:  # the UI keeps the chosen tab in its state, not in the URL
        WebDriverWait(driver, 90).until(
            lambda d: [e for e in d.find_elements(By.XPATH, f"//*[normalize-space(.)='{tab}']") if e.is_displayed()]
        )[-1].click()
    try:
        WebDriverWait(driver, 90).until(
            lambda d: all(text in d.find_element(By.TAG_NAME, "body").text for text in must_show))
    except TimeoutException:
        driver.save_screenshot(str(out.with_suffix(".failed.png")))
        raise SystemExit(f"{url} never showed {must_show}; the page says: "
                         f"{driver.find_element(By.TAG_NAME, 'body').text[:2000]!r} (see {out.with_suffix('.failed.png')})")
    time.sleep(settle_s)  # charts and the run graph draw after the text
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-url", help="Use this running Prefect server instead of starting one.")
    parser.add_argument("--flow-run-id", help="Screenshot this pipeline run instead of running one.")
    parser.add_argument("--workspace", help="Workspace of the run (default: a new temporary folder).")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="Folder of the PNGs. Default: docs/.")
    args = parser.parse_args()

    server = None
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        if args.api_url:
            api_url = args.api_url.rstrip("/")
        else:
            home = tempfile.mkdtemp(prefix="ceta2vec-prefect-home-")
            port = free_port()
            api_url = f"http://127.0.0.1:{port}/api"
            # The UI asks the API at this address; left alone it would assume port 4200.
            env.update(PREFECT_HOME=home, PREFECT_SERVER_UI_API_URL=api_url)
            server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
        wait_healthy(api_url)
        env["PREFECT_API_URL"] = api_url
        run_id = args.flow_run_id
        if run_id is None:
            workspace = args.workspace or tempfile.mkdtemp(prefix="ceta2vec-screenshot-ws-")
            started = time.monotonic()
            subprocess.run([str(BIN / "ceta2vec"), "run", *PIPELINE, "--workspace", workspace], env=env, cwd=ROOT,
                           check=True)
            print(f"pipeline run took {time.monotonic() - started:.0f} s")
            run_id = latest_pipeline_run(api_url)
        ui = api_url.removesuffix("/api")
        driver = browser()
        try:
            out = Path(args.out)
            shoot(driver, f"{ui}/runs/flow-run/{run_id}", ["pipeline-", "Completed"], out / "prefect-ui-pipeline.png")
            shoot(driver, f"{ui}/runs/flow-run/{run_id}", ["pipeline-stages"], out / "prefect-ui-artifacts.png",
                  tab="Artifacts")
        finally:
            driver.quit()
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
