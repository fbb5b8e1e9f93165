"""Runs the Segment emulator in its own process (so it does not share the GIL with the sender).

Prints its URL on the first line of stdout and stops when stdin closes.
"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment_sync_tests.segment_emulator import SegmentEmulator  # noqa: E402

if __name__ == "__main__":
    gc.disable()  # it keeps every accepted event; collections over 10^5+ dicts would dominate its time
    with SegmentEmulator(write_key=sys.argv[1]) as emulator:
        print(emulator.url, flush=True)
        sys.stdin.read()
        print(len(emulator.accepted), emulator.duplicates, len(emulator.discarded), flush=True)
