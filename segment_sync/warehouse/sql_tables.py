"""The tables a model's SQL reads, for lineage: parsed with sqlglot, without asking the warehouse."""

from __future__ import annotations

# warehouse.kind labels that name a sqlglot dialect under another name
_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "sqlserver": "tsql"}


def read_tables(sql: str, kind: str | None = None) -> list[str]:
    """The tables a query reads, as written (`schema.table`), less its CTEs; [] when the SQL does not parse.

    `kind` is the warehouse's label (`duckdb`, `postgres`, `snowflake`...); one sqlglot does not know parses as
    generic SQL.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    dialect = _DIALECTS.get(kind or "", kind)
    try:
        sqlglot.Dialect.get_or_raise(dialect)
    except ValueError:
        dialect = None
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except SqlglotError:
        return []
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    tables = set()
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or (not table.db and table.name in ctes):
            continue  # a table function (read_parquet(...)), or a CTE
        tables.add(".".join(part for part in (table.catalog, table.db, table.name) if part))
    return sorted(tables)
