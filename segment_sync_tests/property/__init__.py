"""Property tests: generated warehouse rows and changes, checked against Segment's rules and a reference builder."""
