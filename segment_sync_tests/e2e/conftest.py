"""The demo, run once per session through the CLI, for the tests of what the UI shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from segment_sync_tests.support.demo_ui import run_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished `segment-sync demo`: its Dagster home and its state."""
    folder = tmp_path_factory.mktemp("demo")
    result = run_demo(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder
