"""What the assets share with what they run: their run configuration and the names of their checks."""

import dagster as dg
from pydantic import Field

PK_CHECK = "primary_key_unique"
GUARD_CHECK = "change_within_limits"


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


class DeliveryConfig(dg.Config):
    """Run configuration of a sync's delivery."""

    dry_run: bool = Field(
        default=False, description="Build the events and write the exact request bodies to the outbox; send nothing."
    )
    test_row: str | None = Field(
        default=None, description="Only send the event of the row with this primary key (state is not changed)."
    )
    replay_keys: list[str] = Field(
        default_factory=list, description="Only re-send the delivered events of these primary keys."
    )
    replay_run: str | None = Field(default=None, description="Only re-send the events a past run delivered.")


# Built once and shared: a `config: DeliveryConfig` parameter would make Dagster infer it again for every sync.
DELIVERY_CONFIG_SCHEMA = DeliveryConfig.to_config_schema()
