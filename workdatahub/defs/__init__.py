"""The Dagster code location, one module per integration; no business logic here."""

import warnings

import dagster as _dg

# backfill_policy (single-run backfills) is marked beta; we rely on it on purpose
warnings.filterwarnings("ignore", category=_dg.BetaWarning)
