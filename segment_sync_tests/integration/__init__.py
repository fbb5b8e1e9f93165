"""Integration tests: real DuckDB, SQLite and PostgreSQL, the component from YAML, alerts through the Slack stub."""
