"""What tests and benchmarks share: the Segment emulator, the Slack stub, warehouses, sync runs and row strategies."""
