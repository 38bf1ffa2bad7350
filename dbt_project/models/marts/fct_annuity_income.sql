-- 收入明细 facts: fees per month, plan, portfolio and customer, with the resolved company,
-- branch and product line. Incremental by period window.
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
    branch_name,
    branch_code,
    fixed_fee,
    variable_fee,
    rebate,
    -- fee income excludes tax: tax is reported beside it, never netted in
    fixed_fee + variable_fee + rebate as fee_income,
    tax,
    load_id,
    source_file,
    source_sheet,
    source_row
from {{ ref('stg_annuity_income') }}
{% if is_incremental() %}
where {{ in_partition_window('period') }}
{% endif %}
