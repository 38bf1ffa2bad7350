{#-
    branch_code for a row, as the data contract has it: the branch reference looked up by
    机构名称, else 'G00' (head office: a missing name, the placeholder `null`, or a name the
    reference lacks, which the staging models' warning test reports). The workbook's own
    机构代码 stays in the raw table as given; it does not decide the code (a typed 北京分公司 or
    a stale code would split a branch's totals).
    `branches` must be the alias of a joined (branch_name, branch_code) lookup.
-#}
{% macro lookup_branch_code(branches_alias='branches') -%}
    coalesce({{ branches_alias }}.branch_code, 'G00')
{%- endmacro %}
