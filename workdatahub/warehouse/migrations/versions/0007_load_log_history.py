"""A load's row in the load log keeps its history; the quality metrics are never rewritten.

The loader (wdh_loader) updates the load log's rows as each load ends: a running load's
status, counts, sheet, headers, totals and message, another load's dead row `abandoned`,
an abandoned row `failed`, and a note on a finished row whose commit's confirmation was
lost. It could update anything else too: a finished load's files, sha256 and counts (what
audit.loads shows analysts), a `failed` row made `succeeded`, and every row of
wdh.data_quality_metrics, which the loads only ever insert. Its credential is on every
machine that runs a load.

So a trigger keeps every role to the load log's own transitions: running → succeeded,
refused, failed or abandoned (a running load's row: its counts, files, headers, message);
abandoned → failed; a finished row's message alone; never a load's identity (id, domain,
month, table, mode, start). And the loader may no longer update wdh.data_quality_metrics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _as_loader(statement: str) -> None:
    """`statement` on the loader's rights, where the role exists (0003 makes it)."""
    op.execute(
        f"""
        do $$ begin
            if exists (select 1 from pg_roles where rolname = 'wdh_loader') then
                {statement};
            end if;
        end $$
        """
    )


def upgrade() -> None:
    op.execute(
        """
        create function wdh.load_log_keeps_history() returns trigger
        language plpgsql as $$
        declare
            kept wdh.load_log;
        begin
            if (new.load_id, new.domain, new.period, new.target_table, new.mode,
                    new.started_at) is distinct from (old.load_id, old.domain, old.period,
                    old.target_table, old.mode, old.started_at) then
                raise exception 'wdh.load_log: load %''s domain, month, table, mode and start '
                    'are not changed', old.load_id
                    using errcode = 'insufficient_privilege';
            end if;
            if old.status = 'running' or old.status = 'abandoned' and new.status = 'failed' then
                return new;
            end if;
            kept := old;
            kept.message := new.message;
            if old.status in ('succeeded', 'refused') and kept is not distinct from new then
                return new;  -- a note on a finished load (its confirmation lost)
            end if;
            raise exception 'wdh.load_log: load % ended %; its row is not changed',
                old.load_id, old.status
                using errcode = 'insufficient_privilege';
        end
        $$
        """
    )
    op.execute(
        "create trigger load_log_keeps_history before update on wdh.load_log "
        "for each row execute function wdh.load_log_keeps_history()"
    )
    _as_loader("revoke update on wdh.data_quality_metrics from wdh_loader")


def downgrade() -> None:
    _as_loader("grant update on wdh.data_quality_metrics to wdh_loader")
    op.execute("drop trigger if exists load_log_keeps_history on wdh.load_log")
    op.execute("drop function if exists wdh.load_log_keeps_history()")
