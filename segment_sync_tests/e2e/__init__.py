"""End-to-end tests: syncs run as users run them, through Dagster and the CLI, to the Segment emulator."""
