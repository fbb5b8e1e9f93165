"""A Dagster project as `create-dagster project` makes it, holding one SegmentSyncComponent, for `dg` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE = "launch_project"
PYPROJECT = f"""[project]
name = "{PACKAGE}"
version = "0.0.1"

[tool.dg]
directory_type = "project"

[tool.dg.cli]
suppress_warnings = ["project_and_activated_venv_mismatch"]

[tool.dg.project]
root_module = "{PACKAGE}"
"""
DEFINITIONS = """from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def write_project(folder: Path, attributes: dict[str, Any]) -> Path:
    """The project's files, with the component's attributes in `defs/syncs/defs.yaml`; returns the package folder."""
    package = folder / PACKAGE
    (package / "defs" / "syncs").mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    component = {"type": "segment_sync.SegmentSyncComponent", "attributes": attributes}
    (package / "defs" / "syncs" / "defs.yaml").write_text(json.dumps(component, indent=2))  # JSON is YAML
    return package


def worker_environment(folder: Path, home: Path, state_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of one machine running `dg`: its own Dagster home and state folder, telemetry off."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (folder / "dg_user_config.toml").write_text("[cli.telemetry]\nenabled = false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DG_CLI_CONFIG": str(folder / "dg_user_config.toml"),
        "PYTHONPATH": str(folder),
        "SEGMENT_SYNC_STATE_DIR": str(state_dir),
        **variables,
    }


def dg_command(*arguments: str) -> list[str]:
    """`dg` of this environment with its arguments."""
    return [str(Path(sys.executable).with_name("dg")), *arguments]


def launch(folder: Path, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """`dg launch` with the arguments, in the project, waited for."""
    return subprocess.run(dg_command("launch", *arguments), cwd=folder, env=env, capture_output=True, text=True)
