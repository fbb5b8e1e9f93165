"""segment-sync: Dagster-native reverse ETL from warehouse models to Segment."""

__version__ = "0.1.0"

from segment_sync.component import SegmentSyncComponent  # noqa: E402 - after __version__, which the core imports

__all__ = ["SegmentSyncComponent", "__version__"]
