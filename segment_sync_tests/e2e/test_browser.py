"""The demo in a real browser, as a new user meets it: `dg dev`'s pages loaded in Chromium, with screenshots.

Needs Debian's Chromium (`apt-get install chromium`, which .ci/run does) and Playwright (a dev dependency);
skipped with the reason when either is missing, except that a missing Chromium fails under CI=true. The same
facts are checked without a browser, through GraphQL, in test_ui.py.
Screenshots go to SEGMENT_SYNC_SCREENSHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_sync_tests.support.demo_ui import REPO, demo_environment
from segment_sync_tests.support.dg_project import dg_command

CHROMIUM = os.environ.get("SEGMENT_SYNC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (uv sync, dev group)")
if not Path(CHROMIUM).exists():
    missing = f"no Chromium at {CHROMIUM}: apt-get install chromium to run the browser tests"
    if os.environ.get("CI") == "true":  # CI installs it (.ci/run): a browser test must not quietly vanish there
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dg dev` over the demo's Dagster home, as the demo tells the user to start it; yields its base URL."""
    port = _free_port()
    env = {**os.environ, **demo_environment(demo), "DAGSTER_HOME": str(demo / "dagster_home")}
    env.pop("WAREHOUSE_URL", None)
    log = open(tmp_path_factory.mktemp("dg_dev") / "dg_dev.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        dg_command("dev", "--port", str(port), "--host", "127.0.0.1"),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, f"dg dev exited; see {log.name}"
                assert time.monotonic() < deadline, f"dg dev did not answer in 240 s; see {log.name}"
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def page(ui: str) -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("SEGMENT_SYNC_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _visit(page, url: str, text: str, shot: Path) -> str:  # noqa: ANN001 - playwright's Page
    page.goto(url)
    page.get_by_text(text, exact=False).first.wait_for()
    time.sleep(1)  # let the graph and the timeline settle (and a first-visit dialog open) before the screenshot
    _dismiss_dialog(page)
    page.screenshot(path=str(shot), full_page=True)
    return page.inner_text("body")


def _dismiss_dialog(page) -> None:  # noqa: ANN001 - playwright's Page
    """Close the first visit's "Join the Dagster community" dialog, which may open a moment after the page."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def test_the_jobs_runs_tab_lists_the_demos_runs(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(
        page, f"{ui}/locations/segment_sync/jobs/sync_users_lifecycle/runs", "Success", shots / "job_runs.png"
    )
    assert body.count("Success") >= 2, body[:2000]


def test_the_overview_timeline_shows_the_sync_jobs(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(page, f"{ui}/overview/activity/timeline", "sync_users_lifecycle", shots / "timeline.png")
    assert "sync_account_groups" in body


def test_manual_runs_are_marked_in_the_runs_list(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(page, f"{ui}/runs", "dry_run_users_lifecycle", shots / "runs.png")
    assert "test_row_user_traits" in body and "segment_sync/manual" in body


def test_the_dry_run_job_says_what_it_does(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(
        page, f"{ui}/locations/segment_sync/jobs/dry_run_users_lifecycle", "sends nothing", shots / "dry_run_job.png"
    )
    assert "Dry run of sync" in body


def test_the_asset_graph_reads_as_bands_of_stages(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(page, f"{ui}/asset-groups", "segment_sync_snapshot", shots / "asset_graph.png")
    assert "segment_sync_warehouse" in body and "segment_sync_segment" in body


def test_a_syncs_asset_pages_show_its_history_and_no_personal_data(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    body = _visit(page, f"{ui}/assets/diff/users_lifecycle", "changed_columns", shots / "diff_asset.png")
    assert "@example.com" not in body and "also read by" in body
    body = _visit(page, f"{ui}/assets/segment/users_lifecycle", "recent_runs", shots / "segment_asset.png")
    assert "@example.com" not in body and "events_sent_by_type" in body


def test_a_dry_run_shows_on_the_delivery_as_a_marked_observation(page, ui: str, shots: Path) -> None:  # noqa: ANN001
    url = f"{ui}/assets/segment/users_lifecycle?view=events"
    body = _visit(page, url, "Materialized in run", shots / "segment_events.png")  # the latest delivery stays first
    assert "manual_run" not in body
    _dismiss_dialog(page)
    # newest first: the dry run; dispatched to the entry itself, so no overlay can take the click
    page.get_by_text(re.compile(r"^[A-Z][a-z]{2} \d+, \d+:\d\d [AP]M$")).nth(1).dispatch_event("click")
    page.get_by_text("Observed in run").first.wait_for()
    page.screenshot(path=str(shots / "segment_dry_run_observation.png"), full_page=True)
    body = page.inner_text("body")
    assert "manual_run" in body and "dry run" in body and "@example.com" not in body
