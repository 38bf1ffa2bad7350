"""Resources: the warehouse (embedded or external Postgres) and the data folder."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from workdatahub.settings import get_settings


class WarehouseResource(dg.ConfigurableResource):
    """Where workbooks are read from and which Postgres they load into.

    Empty strings mean "from the settings" (WDH_DATA_DIR, WDH_DATABASE_URL or embedded).
    """

    data_dir: str = ""

    def data_path(self) -> Path:
        return Path(self.data_dir).resolve() if self.data_dir else get_settings().data_dir

    def url(self) -> str:
        from workdatahub.warehouse.db import database_url

        return database_url()

    def export_dbt_env(self) -> None:
        """dbt's profiles.yml reads WDH_DBT_*; the dbt subprocess inherits them.

        With WDH_DBT_DATABASE_URL set, dbt builds through that URL alone: the warehouse URL
        is not resolved (which could start the embedded Postgres for nothing)."""
        from workdatahub.warehouse.db import dbt_env

        override = get_settings().dbt_database_url is not None
        os.environ.update(dbt_env(None if override else self.url()))
