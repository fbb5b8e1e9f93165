"""The columns the pipeline adds beside a model's own: the key string, the content sent, the row hash, the diff's."""

import polars as pl

KEY, CONTENT, GEN, HASH, ROW = "_key", "_content", "_gen", "_hash", "_row"
KIND, BEFORE, AFTER, BEFORE_GEN = "_kind", "_before", "_after", "_before_gen"

DELIVERED_SCHEMA = {KEY: pl.String, CONTENT: pl.String, GEN: pl.Int64, HASH: pl.UInt64}
DIFF_SCHEMA = {
    KEY: pl.String,
    KIND: pl.String,
    BEFORE_GEN: pl.Int64,
    BEFORE: pl.String,
    AFTER: pl.String,
    HASH: pl.UInt64,
}
