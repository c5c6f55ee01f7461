"""The one source of truth for ceta2vec's data shapes.

- `schemas.arrow`: Arrow schemas of the Parquet datasets.
- `schemas.tables`: DuckDB DDL (tables, views) and the schema version.
- `schemas.settings`: the typed settings object of each flow (Prefect's parameter form, the CLI's options).
"""
