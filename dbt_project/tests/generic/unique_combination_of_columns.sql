{#-
    Fails for every combination of the given columns that occurs more than once.
    Nulls count as equal values (group by semantics), so a grain with a null member is
    still checked. Written here because dbt packages (dbt_utils) cannot be installed offline.
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

select
    {{ combination_of_columns | join(', ') }},
    count(*) as duplicate_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1

{% endtest %}
