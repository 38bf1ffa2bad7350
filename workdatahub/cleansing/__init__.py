"""Vectorised value parsing and named domain rules (pure: no database, no Dagster)."""
