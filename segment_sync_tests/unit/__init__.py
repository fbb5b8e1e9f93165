"""Unit tests: one module at a time, with real files and loopback HTTP where the module talks to them."""
