{#-
    branch_code for a row: the workbook's own 机构代码 when it holds a real code, else the
    branch reference looked up by 机构名称, else 'G00' (head office, the contract's default).
    The literal text 'null' is a placeholder some months carry; it counts as missing.
    `branches` must be the alias of a joined (branch_name, branch_code) lookup.
-#}
{% macro lookup_branch_code(raw_branch_code, branches_alias='branches') -%}
    coalesce(
        case
            when lower(trim({{ raw_branch_code }})) in ('', 'null') then null
            else trim({{ raw_branch_code }})
        end,
        {{ branches_alias }}.branch_code,
        'G00'
    )
{%- endmacro %}
