{#-
    Per month in the partition window (every month without one), the model carries exactly
    the rows and amounts of the relation it is built from, `against`: a mart against its raw
    table (staging only adds lookups, left joins over de-duplicated reference data), the
    summary against each fact table. Any difference means rows were lost or multiplied on
    the way. Fails with one row per month that disagrees, both sides shown.

    period / against_period: the month column of each side; row_count: what counts the
    model's rows (the summary sums a row-count column); measures: [{name, against, built}],
    an SQL aggregate on each side; lineage: a column both sides carry (load_id) whose values
    in the model must be among those of the same month in `against` (equal counts and sums
    from another load of the same workbook would pass otherwise: a mart left on a load raw
    no longer holds).

    One test per step, attached to the model it checks: a Dagster run builds one domain's
    models (the arrival sensor, the schedule), and a test reading another domain's mart
    would be skipped in it (dbt's buildable selection), as a test over all marts was.
-#}
{% test reconciles_to(model, against, period, measures, against_period=none, row_count="count(*)", lineage=none) %}

with against_side as (

    select {{ against_period or period }} as period, count(*)::numeric as row_count
        {%- for measure in measures %},
        ({{ measure.against }})::numeric as {{ measure.name }}
        {%- endfor %}
    from {{ against }}
    where {{ in_partition_window(against_period or period) }}
    group by 1

),
{%- if lineage %}

against_lineage as (

    select distinct {{ against_period or period }} as period, {{ lineage }} as lineage
    from {{ against }}
    where {{ in_partition_window(against_period or period) }}

),
{%- endif %}

built_side as (

    select built.{{ period }} as period, ({{ row_count }})::numeric as row_count
        {%- for measure in measures %},
        ({{ measure.built }})::numeric as {{ measure.name }}
        {%- endfor %}
        {%- if lineage %},
        (count(*) filter (where against_lineage.lineage is null))::numeric as rows_of_other_loads
        {%- endif %}
    from (select * from {{ model }}) as built  {#- (with a window `model` is a subquery) #}
    {%- if lineage %}
    left join against_lineage
        on against_lineage.period = built.{{ period }}
        and against_lineage.lineage = built.{{ lineage }}
    {%- endif %}
    where {{ in_partition_window("built." ~ period) }}
    group by 1

)

select
    coalesce(against_side.period, built_side.period) as period,
    against_side.row_count as expected_row_count,
    built_side.row_count as built_row_count
    {%- for measure in measures %},
    against_side.{{ measure.name }} as expected_{{ measure.name }},
    built_side.{{ measure.name }} as built_{{ measure.name }}
    {%- endfor %}
    {%- if lineage %},
    built_side.rows_of_other_loads
    {%- endif %}
from against_side
full outer join built_side on against_side.period = built_side.period
where coalesce(against_side.row_count, 0) <> coalesce(built_side.row_count, 0)
    {%- for measure in measures %}
    or coalesce(against_side.{{ measure.name }}, 0) <> coalesce(built_side.{{ measure.name }}, 0)
    {%- endfor %}
    {%- if lineage %}
    or coalesce(built_side.rows_of_other_loads, 0) <> 0
    {%- endif %}

{% endtest %}
