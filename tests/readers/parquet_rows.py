"""Reads Parquet files the way analysts do, with two readers siphon did not write:
pyarrow (as pandas and Spark's Arrow path read it) and DuckDB, both without options.

Usage: parquet_rows.py FILE...   Prints one JSON object:
  {"schema": [[name, arrow type], ...], "rows": [[value, ...], ...],
   "duckdb_count": n, "duckdb_types": [...], "row_groups": n, "compression": [...]}
Values are made JSON-safe: timestamps as microseconds since the epoch, dates as ISO
text, decimals as their exact text; everything else as pyarrow returns it.
"""
import datetime
import decimal
import json
import sys

import duckdb
import pyarrow.parquet as pq

EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
EPOCH = datetime.datetime(1970, 1, 1)


def value(v):
    if isinstance(v, datetime.datetime):
        base = EPOCH_UTC if v.tzinfo is not None else EPOCH
        return {"micros": (v - base) // datetime.timedelta(microseconds=1)}
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return v


out = {"schema": None, "rows": [], "duckdb_rows": [], "duckdb_types": None,
       "row_groups": 0, "compression": []}
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for path in sys.argv[1:]:
    table = pq.read_table(path)
    schema = [[f.name, str(f.type)] for f in table.schema]
    if out["schema"] is None:
        out["schema"] = schema
    elif out["schema"] != schema:
        sys.exit(f"{path}: schema {schema} differs from {out['schema']}")
    for row in table.to_pylist():
        out["rows"].append([value(v) for v in row.values()])
    meta = pq.ParquetFile(path).metadata
    out["row_groups"] += meta.num_row_groups
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            codec = meta.row_group(g).column(c).compression
            if codec not in out["compression"]:
                out["compression"].append(codec)
    result = con.execute("SELECT * FROM read_parquet(?)", [path])
    out["duckdb_types"] = [str(d[1]) for d in result.description]
    out["duckdb_rows"] += [[value(v) for v in row] for row in result.fetchall()]
print(json.dumps(out))
