"""The asset factory pieces: snapshot/<model>, diff/<sync> and segment/<sync>."""

from segment_sync.assets.delivery_asset import build_segment_asset
from segment_sync.assets.diff_asset import build_diff_asset
from segment_sync.assets.names import (
    AssetOptions,
    ResourceKeys,
    diff_key,
    segment_key,
    snapshot_key,
    stage_group,
    sync_pool,
    table_key,
)
from segment_sync.assets.run_config import GUARD_CHECK, MANUAL_TAG, PK_CHECK, SYNC_TAG, DiffConfig
from segment_sync.assets.snapshot_asset import build_snapshot_asset

__all__ = [
    "GUARD_CHECK",
    "MANUAL_TAG",
    "PK_CHECK",
    "SYNC_TAG",
    "AssetOptions",
    "DiffConfig",
    "ResourceKeys",
    "build_diff_asset",
    "build_segment_asset",
    "build_snapshot_asset",
    "diff_key",
    "segment_key",
    "snapshot_key",
    "stage_group",
    "sync_pool",
    "table_key",
]
