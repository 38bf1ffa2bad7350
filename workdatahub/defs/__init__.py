"""The Dagster code location, one module per integration; no business logic here."""
