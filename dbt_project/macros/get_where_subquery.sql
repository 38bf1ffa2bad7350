{#-
    The rows a test looks at (dbt's own macro, overridden): its `where` config as dbt
    applies it, and, when a partition window is set (a month's run from Dagster, or the
    vars), only the window's months of a model with a month column (var partition_columns).
    Staging models are views over every month: without this, a bad row of one month failed
    the run of another, and its marts were not built. A plain `dbt build` (no window) tests
    every month, as before.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set column = var('partition_columns', {}).get(relation.identifier) -%}
    {%- if column and partition_window() is not none -%}
        {%- set in_window = in_partition_window(column) -%}
        {%- set where = '(' ~ where ~ ') and ' ~ in_window if where else in_window -%}
    {%- endif -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
