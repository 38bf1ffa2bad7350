{#-
    The partition window (start inclusive, end exclusive): the vars period_start and
    period_end, e.g. --vars '{period_start: "2024-11-01", period_end: "2024-12-01"}';
    else the environment variables WDH_PERIOD_START and WDH_PERIOD_END, which is how
    Dagster passes the month (or backfill range) it builds: vars given on the command line
    make dbt parse the whole project again whenever they change (a few seconds, every
    month), an environment variable only the files that read it. With neither set every
    month is in the window, so a plain `dbt build` rebuilds everything.

    Marts are incremental tables that, on an incremental run, first delete the window
    (pre-hook, same transaction as the insert) and then insert the window from staging.
    Deleting by window rather than by the keys of the new rows means a month whose raw
    rows all disappeared is emptied in the mart too, and re-running a window is idempotent.
-#}

{#- Returns none (no window: all months) or {'start': 'YYYY-MM-DD', 'end': 'YYYY-MM-DD'}. -#}
{% macro partition_window() %}
    {%- set raw_start = var('period_start', none) -%}
    {%- set raw_end = var('period_end', none) -%}
    {%- if raw_start is none and raw_end is none -%}
        {%- set raw_start = env_var('WDH_PERIOD_START', '') -%}
        {%- set raw_end = env_var('WDH_PERIOD_END', '') -%}
    {%- endif -%}
    {#- a date-typed YAML value (unquoted 2024-11-01) renders the same as the string -#}
    {%- set start = (raw_start | string | trim) if raw_start is not none else '' -%}
    {%- set end = (raw_end | string | trim) if raw_end is not none else '' -%}
    {%- if start == '' and end == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if start == '' or end == '' -%}
        {{ exceptions.raise_compiler_error(
            "period_start and period_end must be set together (got period_start=" ~ start
            ~ ", period_end=" ~ end ~ ")") }}
    {%- endif -%}
    {%- for value in [start, end] -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
            {{ exceptions.raise_compiler_error(
                "period_start/period_end must be YYYY-MM-DD, got '" ~ value ~ "'") }}
        {%- endif -%}
    {%- endfor -%}
    {%- if start >= end -%}
        {{ exceptions.raise_compiler_error(
            "period_start (" ~ start ~ ") must be before period_end (" ~ end ~ "), end is exclusive") }}
    {%- endif -%}
    {{ return({'start': start, 'end': end}) }}
{% endmacro %}


{#- A boolean SQL predicate: the column falls in the window (`true` without a window). -#}
{% macro in_partition_window(column) -%}
    {%- set window = partition_window() -%}
    {%- if window is none -%}
        true
    {%- else -%}
        ({{ column }} >= date '{{ window.start }}' and {{ column }} < date '{{ window.end }}')
    {%- endif -%}
{%- endmacro %}


{#-
    Pre-hook for incremental marts: clear the window before the insert. Renders to
    nothing on the first build (the table is created from scratch), and to the lock alone
    on a --full-refresh (the table is created anew).

    One build of a mart at a time: the lock makes a second build (the two annuity domains'
    runs of a month both build the marts they share; a modeler's `dbt run` beside a
    scheduled run) wait until the first commits, so that its delete sees, and removes,
    what the first inserted. Without it the second waited only for the rows the first
    deleted, skipped them, and added its rows to the first's: the month twice. A full
    refresh of a mart that exists takes the lock too, before it reads staging: without it,
    it read every month at its start and then put its table in place of the mart, over
    what a month's build had committed meanwhile. Readers are not blocked (share row
    exclusive conflicts with writers only).
-#}
{% macro delete_partition_window(column) -%}
    {%- if is_incremental() -%}
        lock table {{ this }} in share row exclusive mode;
        delete from {{ this }} where {{ in_partition_window(column) }}
    {%- elif load_relation(this) is not none -%}
        lock table {{ this }} in share row exclusive mode
    {%- endif -%}
{%- endmacro %}


{#-
    Pre-hook of every mart (dbt_project.yml's marts folder). A mart is an incremental table
    built a window of months at a time; a model in marts/ not written for that would, on
    each run after its first, insert every month again (plus whatever it did not delete):
    the months twice, silently. So a mart must delete its window (pre_hook
    delete_partition_window('<column>')), select the window alone on an incremental run
    (`where {{ in_partition_window('<column>') }}` under `is_incremental()`), and name the
    same column in the var partition_columns (its tests then look at the window only). One
    that does not fails, naming what is missing, before it writes anything.
-#}
{% macro require_partition_window() -%}
    {%- if execute and model.config.materialized == 'incremental' -%}
        {%- set found = [] -%}
        {%- for hook in model.config.get('pre-hook', []) -%}
            {%- set sql = hook.sql if hook is mapping else hook | string -%}
            {%- set match = modules.re.search("delete_partition_window\\(\\s*(?:column\\s*=\\s*)?['\"](\\w+)['\"]", sql) -%}
            {%- if match -%}{%- do found.append(match.group(1)) -%}{%- endif -%}
        {%- endfor -%}
        {%- set column = found[0] if found else '<column>' -%}
        {%- set missing = [] -%}
        {%- if not found -%}
            {%- do missing.append("pre_hook=\"{{ delete_partition_window('" ~ column ~ "') }}\" in its config") -%}
        {%- endif -%}
        {#- (what a comment holds is no filter: Jinja's, or SQL's, where it still renders) -#}
        {%- set code = modules.re.sub("(?s){#.*?#}|/\\*.*?\\*/|--[^\\n]*", "", model.raw_code) -%}
        {%- if not modules.re.search("in_partition_window\\(\\s*(?:column\\s*=\\s*)?['\"]" ~ column ~ "['\"]", code) -%}
            {%- do missing.append("`where {{ in_partition_window('" ~ column ~ "') }}` in its select, under is_incremental()") -%}
        {%- endif -%}
        {%- if var('partition_columns', {}).get(model.name) != column -%}
            {%- do missing.append("`" ~ model.name ~ ": " ~ column ~ "` in dbt_project.yml's var partition_columns") -%}
        {%- endif -%}
        {%- if missing -%}
            {{ exceptions.raise_compiler_error(
                model.name ~ " is a mart (an incremental table built a window of months at a time) "
                ~ "and lacks " ~ missing | join('; ') ~ ". Without them each run after its first "
                ~ "would insert every month again (see dbt_project/README.md, 'Adding a mart')") }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
