{#-
    Use a model's custom schema verbatim (staging, marts, reference) instead of dbt's
    default "<target schema>_<custom>": the Python side and the reports address these
    schemas by name. Nodes without a custom schema land in the target schema (marts).
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
