"""Least-privilege roles: wdh_loader, wdh_transformer, wdh_reader.

    wdh_loader       the CLI and the Dagster raw assets: reads and writes the tables of
                     raw and wdh (load, quarantine, load log); creates nothing
    wdh_transformer  dbt: reads raw; creates and owns what it builds in staging, marts
                     and reference (seeds); no access to wdh, no writes to raw
    wdh_reader       analysts and reports: reads staging, marts and reference

The roles can log in but get no password here: an operator sets one (`alter role …
password …`) where the server asks for it; the embedded server trusts local sockets.

Roles belong to the whole server, not to one database: another warehouse database on the
same server may have created them already, so creation tolerates that, and the downgrade
drops a role only when no other database still grants it anything. Privileges, by
contrast, are per database and are granted here for this one, including default
privileges so that tables made later (by migrations, or by dbt) are covered too.

Migrations run as the warehouse owner (a superuser, or a role with CREATEROLE that owns the
database: it makes itself a member of wdh_transformer, able to act for it, and hands dbt's
existing relations over to that role).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ROLES = {
    "wdh_loader": "WorkDataHub loads: writes raw and wdh only",
    "wdh_transformer": "WorkDataHub dbt: reads raw, builds staging, marts and reference",
    "wdh_reader": "WorkDataHub analysts: reads staging, marts and reference",
}
# schemas dbt builds into; made here so that dbt needs no right to create schemas
DBT_SCHEMAS = ("staging", "marts", "reference")


def _create_role(name: str, comment: str) -> None:
    # duplicate_object: the role exists (made by another database's migration, or an
    # operator); unique_violation: another migration is creating it at this moment
    op.execute(
        f"""
        do $$
        begin
            create role {name} login;
            comment on role {name} is '{comment}';
        exception
            when duplicate_object or unique_violation then
                raise notice 'role {name} exists; kept as it is';
        end
        $$
        """
    )


def upgrade() -> None:
    for name, comment in ROLES.items():
        _create_role(name, comment)
    for schema in DBT_SCHEMAS:
        op.execute(f"create schema if not exists {schema}")

    # the loader: data in raw and wdh, never their shape
    op.execute("grant usage on schema raw, wdh to wdh_loader")
    op.execute(
        "grant select, insert, update, delete on all tables in schema raw, wdh to wdh_loader"
    )
    op.execute("grant usage, select on all sequences in schema raw, wdh to wdh_loader")
    op.execute(
        "alter default privileges in schema raw, wdh "
        "grant select, insert, update, delete on tables to wdh_loader"
    )
    op.execute(
        "alter default privileges in schema raw, wdh grant usage, select on sequences to wdh_loader"
    )

    # the transformer: reads raw (not the audit tables in wdh), builds the dbt schemas
    op.execute("grant usage on schema raw to wdh_transformer")
    op.execute("grant select on all tables in schema raw to wdh_transformer")
    op.execute("alter default privileges in schema raw grant select on tables to wdh_transformer")
    op.execute(f"grant usage, create on schema {', '.join(DBT_SCHEMAS)} to wdh_transformer")
    # dbt replaces what it built (rename, drop, alter), which only the owner may do; models
    # built before this migration belong to whoever ran dbt then (the owner, in development)
    op.execute(
        f"""
        do $$
        declare
            relation record;
        begin
            -- Postgres 16 and later hand a role its creator (a CREATEROLE owner that is no
            -- superuser) without INHERIT or SET (createrole_self_grant): a member all the
            -- same, but one that may neither act for it (default privileges) nor give it
            -- what it owns; both are granted here, by the admin option the creator holds
            if current_setting('server_version_num')::int >= 160000 then
                if not (pg_has_role(current_user, 'wdh_transformer', 'USAGE')
                        and pg_has_role(current_user, 'wdh_transformer', 'SET')) then
                    execute format(
                        'grant wdh_transformer to %I with inherit true, set true', current_user
                    );
                end if;
            elsif not pg_has_role(current_user, 'wdh_transformer', 'MEMBER') then
                execute format('grant wdh_transformer to %I', current_user);
            end if;
            for relation in
                select c.relkind, format('%I.%I', n.nspname, c.relname) as name
                from pg_class c
                join pg_namespace n on n.oid = c.relnamespace
                where n.nspname in ({", ".join(f"'{s}'" for s in DBT_SCHEMAS)})
                  and c.relkind in ('r', 'p', 'v', 'm')
                  and pg_get_userbyid(c.relowner) = current_user
            loop
                execute format(
                    'alter %s %s owner to wdh_transformer',
                    case relation.relkind
                        when 'v' then 'view'
                        when 'm' then 'materialized view'
                        else 'table'
                    end,
                    relation.name
                );
            end loop;
        end
        $$
        """
    )

    # the reader: what dbt builds, whoever builds it (the transformer, or the owner when
    # dbt runs without WDH_DBT_DATABASE_URL)
    op.execute(f"grant usage on schema {', '.join(DBT_SCHEMAS)} to wdh_reader")
    op.execute(f"grant select on all tables in schema {', '.join(DBT_SCHEMAS)} to wdh_reader")
    for owner in ("wdh_transformer", "current_user"):
        op.execute(
            f"alter default privileges for role {owner} in schema {', '.join(DBT_SCHEMAS)} "
            "grant select on tables to wdh_reader"
        )


def downgrade() -> None:
    for name in ROLES:
        op.execute(
            f"""
            do $$
            begin
                if not exists (select from pg_roles where rolname = '{name}') then
                    return;
                end if;
                -- what the role owns here (dbt's models) stays, owned by the migrating role;
                -- then drop owned only revokes this database's grants and default privileges
                execute format('reassign owned by {name} to %I', current_user);
                drop owned by {name};
                begin
                    drop role {name};
                exception
                    when dependent_objects_still_exist then
                        raise notice 'role {name} kept: another database still grants it rights';
                end;
            end
            $$
            """
        )
