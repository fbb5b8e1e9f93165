"""Runs launched through a code location, in this process: the UI lists them under their jobs and on the timeline.

`execute_in_process` and `dg launch --job` create runs that know their Python code but not the code location they
belong to, so the UI's Jobs pages, a job's Runs tab and the Overview timeline leave them out. Here the code
location is loaded as the UI loads it (in process, under its name) and each run carries its job's origin, the
`.dagster/repository` tag included, as a run launched from the UI does; it then executes in this process, as the
UI's run worker would. The few Dagster internals this needs are all in this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.external import RemoteRepository
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._utils.hosted_user_process import recon_job_from_origin

DEFINITIONS_MODULE = "segment_sync.definitions"
LOCATION_NAME = "segment_sync"  # code_location_name in pyproject.toml, and location_name in workspace.yaml


class CodeLocationRunner:
    """Runs jobs of one loaded code location, each carrying the location's origin."""

    def __init__(self, instance: dg.DagsterInstance, repository: RemoteRepository):
        self.instance = instance
        self.repository = repository

    def run(
        self, job_name: str, run_config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> dg.JobExecutionResult:
        """Create the job's run as the UI would, then execute it here and wait for it."""
        remote_job = self.repository.get_full_job(job_name)
        recon_job = recon_job_from_origin(remote_job.get_python_origin())
        job_def = recon_job.get_definition()
        run = self.instance.create_run_for_job(
            job_def,
            run_config=run_config or {},
            tags={**job_def.run_tags, **(tags or {})},
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        return execute_run(recon_job, run, self.instance)


@contextlib.contextmanager
def loaded_workspace(
    instance: dg.DagsterInstance, module: str = DEFINITIONS_MODULE, location: str = LOCATION_NAME
) -> Iterator[WorkspaceProcessContext]:
    """A workspace of one code location, `module`'s definitions under the name `location`, loaded in this process."""
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=module, working_directory=os.getcwd())
    origin = InProcessCodeLocationOrigin(target, location_name=location)
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process:
        yield process


@contextlib.contextmanager
def code_location(
    instance: dg.DagsterInstance, module: str = DEFINITIONS_MODULE, location: str = LOCATION_NAME
) -> Iterator[CodeLocationRunner]:
    """A runner of the jobs of `module`'s definitions as the code location `location`, loaded once for many runs."""
    with loaded_workspace(instance, module, location) as process:
        loaded = process.create_request_context().get_code_location(location)
        [repository] = loaded.get_repositories().values()
        yield CodeLocationRunner(instance, repository)
