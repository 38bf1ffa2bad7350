{#-
    Per month in the partition window (every month without one), the model carries exactly
    the rows and amounts of the relation it is built from, `against`: a mart against its raw
    table (staging only adds lookups, left joins over de-duplicated reference data), the
    summary against each fact table. Any difference means rows were lost or multiplied on
    the way. Fails with one row per month that disagrees, both sides shown.

    period / against_period: the month column of each side; row_count: what counts the
    model's rows (the summary sums a row-count column); measures: [{name, against, built}],
    an SQL aggregate on each side.

    One test per step, attached to the model it checks: a Dagster run builds one domain's
    models (the arrival sensor, the schedule), and a test reading another domain's mart
    would be skipped in it (dbt's buildable selection), as a test over all marts was.
-#}
{% test reconciles_to(model, against, period, measures, against_period=none, row_count="count(*)") %}

with against_side as (

    select {{ against_period or period }} as period, count(*)::numeric as row_count
        {%- for measure in measures %},
        ({{ measure.against }})::numeric as {{ measure.name }}
        {%- endfor %}
    from {{ against }}
    where {{ in_partition_window(against_period or period) }}
    group by 1

),

built_side as (

    select {{ period }} as period, ({{ row_count }})::numeric as row_count
        {%- for measure in measures %},
        ({{ measure.built }})::numeric as {{ measure.name }}
        {%- endfor %}
    from {{ model }}
    where {{ in_partition_window(period) }}
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
from against_side
full outer join built_side on against_side.period = built_side.period
where coalesce(against_side.row_count, 0) <> coalesce(built_side.row_count, 0)
    {%- for measure in measures %}
    or coalesce(against_side.{{ measure.name }}, 0) <> coalesce(built_side.{{ measure.name }}, 0)
    {%- endfor %}

{% endtest %}
