"""What the assets and the manual jobs share with what they run: run configuration, check names and run tags."""

import dagster as dg
from pydantic import Field

PK_CHECK = "primary_key_unique"
GUARD_CHECK = "change_within_limits"
MANUAL_TAG = "segment_sync/manual"  # on the runs of the dry-run, test-row and replay jobs: which of them
SYNC_TAG = "segment_sync/sync"  # on the runs of those jobs: the sync


class DiffConfig(dg.Config):
    """Run configuration of a sync's diff."""

    approve_large_change: bool = Field(
        default=False, description="Send this run's diff even if it is larger than the sync's limits."
    )
    full_resync: bool = Field(
        default=False,
        description="Send every current row as added, with new messageIds (Segment dedupes only about 24 h).",
    )
    reset: bool = Field(
        default=False, description="Forget what was delivered, sending nothing; the next run treats every row as added."
    )


# Built once and shared: a `config: DiffConfig` parameter would make Dagster infer it again for every sync.
DIFF_CONFIG_SCHEMA = DiffConfig.to_config_schema()


class TestRowConfig(dg.Config):
    """Run configuration of a sync's test-row job."""

    key: str = Field(
        default="",
        description="The primary key of the row to send (a composite key as its parts joined by |); empty: the "
        "first row of the model's latest snapshot.",
    )


class ReplayConfig(dg.Config):
    """Run configuration of a sync's replay job."""

    keys: list[str] = Field(default_factory=list, description="Re-send the delivered events of these primary keys.")
    run: str | None = Field(default=None, description="Re-send the events this past run delivered.")


TEST_ROW_CONFIG_SCHEMA = TestRowConfig.to_config_schema()
REPLAY_CONFIG_SCHEMA = ReplayConfig.to_config_schema()
