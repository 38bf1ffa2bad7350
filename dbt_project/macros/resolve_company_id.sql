{#-
    Adds company_id and company_id_source to the rows of `relation` (a CTE name).
    The relation must have plan_code, plan_type and customer_name (normalised), and
    annuity_account_no when with_account_no is true (the income sheet has no account number,
    so its chain skips that step).

    Resolution, first hit wins (domains.md):
      1. override   ref_company_id_overrides, match_type 'plan_code', then 'customer_name'
      2. plan       ref_annuity_plans by plan_code, only for 单一计划 rows
                    (a 集合计划 pools many companies, so its plan says nothing about one)
      3. account    ref_annuity_accounts by annuity_account_no
      4. name       ref_company_names by normalised customer_name
      5. temporary  temp_company_id(customer_name), never null

    An empty company_id in reference data counts as no hit. Each lookup is de-duplicated
    with distinct on so a repeated key in reference data can never multiply fact rows
    (the seed tests in seeds/_seeds.yml fail on such a duplicate, so it is not silent).
-#}
{% macro resolve_company_id(relation, with_account_no=true) -%}
    {%- set lookups = [
        ('override_by_plan', 'override'),
        ('override_by_name', 'override'),
        ('by_plan', 'plan'),
    ] -%}
    {%- if with_account_no -%}
        {%- do lookups.append(('by_account', 'account')) -%}
    {%- endif -%}
    {%- do lookups.append(('by_name', 'name')) -%}

select
    resolving.*,
    coalesce(
        {%- for alias, source in lookups %}
        {{ alias }}.company_id,
        {%- endfor %}
        {{ temp_company_id('resolving.customer_name') }}
    ) as company_id,
    case
        {%- for alias, source in lookups %}
        when {{ alias }}.company_id is not null then '{{ source }}'
        {%- endfor %}
        else 'temporary'
    end as company_id_source
from {{ relation }} as resolving
left join (
    select distinct on (trim(match_value)) trim(match_value) as plan_code, trim(company_id) as company_id
    from {{ ref('ref_company_id_overrides') }}
    where trim(match_type) = 'plan_code' and nullif(trim(company_id), '') is not null
    order by trim(match_value), trim(company_id)
) as override_by_plan
    on override_by_plan.plan_code = resolving.plan_code
left join (
    select distinct on (trim(match_value)) trim(match_value) as customer_name, trim(company_id) as company_id
    from {{ ref('ref_company_id_overrides') }}
    where trim(match_type) = 'customer_name' and nullif(trim(company_id), '') is not null
    order by trim(match_value), trim(company_id)
) as override_by_name
    on override_by_name.customer_name = resolving.customer_name
left join (
    select distinct on (trim(plan_code)) trim(plan_code) as plan_code, trim(company_id) as company_id
    from {{ ref('ref_annuity_plans') }}
    where nullif(trim(company_id), '') is not null
    order by trim(plan_code), trim(company_id)
) as by_plan
    on by_plan.plan_code = resolving.plan_code
    and resolving.plan_type = '单一计划'
{%- if with_account_no %}
left join (
    select distinct on (trim(annuity_account_no)) trim(annuity_account_no) as annuity_account_no, trim(company_id) as company_id
    from {{ ref('ref_annuity_accounts') }}
    where nullif(trim(company_id), '') is not null
    order by trim(annuity_account_no), trim(company_id)
) as by_account
    on by_account.annuity_account_no = resolving.annuity_account_no
{%- endif %}
left join (
    select distinct on (trim(company_name)) trim(company_name) as company_name, trim(company_id) as company_id
    from {{ ref('ref_company_names') }}
    where nullif(trim(company_id), '') is not null
    order by trim(company_name), trim(company_id)
) as by_name
    on by_name.company_name = resolving.customer_name
{%- endmacro %}
