-- 规模明细 facts: assets and flows per month, plan, portfolio and customer, with the
-- resolved company, branch and product line. Incremental by period window.
{{
    config(
        pre_hook="{{ delete_partition_window('period') }}",
        indexes=[{'columns': ['period']}, {'columns': ['company_id']}],
    )
}}

select
    period,
    business_type,
    product_line_code,
    plan_type,
    plan_code,
    plan_name,
    portfolio_type,
    portfolio_code,
    portfolio_name,
    company_id,
    company_id_source,
    customer_name,
    annuity_account_name,
    annuity_account_no,
    group_customer_no,
    group_customer_name,
    sub_enterprise_no,
    sub_enterprise_name,
    branch_name,
    branch_code,
    opening_assets,
    closing_assets,
    contributions,
    outflow_incl_benefits,
    outflow,
    benefit_payments,
    investment_income,
    period_return,
    load_id,
    source_file,
    source_sheet,
    source_row
from {{ ref('stg_annuity_performance') }}
{% if is_incremental() %}
where {{ in_partition_window('period') }}
{% endif %}
