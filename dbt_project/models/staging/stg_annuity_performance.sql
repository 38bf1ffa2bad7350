-- 规模明细 rows with their branch, product line and company resolved from reference data.
-- Every lookup is a left join over de-duplicated reference rows, so this view has exactly
-- one row per raw row (the reconciliation test relies on it).
with {{ reference_lookup_ctes() }},

looked_up as (

    select
        source.period,
        source.business_type,
        product_lines.product_line_code,
        source.plan_type,
        source.plan_code,
        source.plan_name,
        source.portfolio_type,
        source.portfolio_code,
        source.portfolio_name,
        source.customer_name,
        source.annuity_account_name,
        source.annuity_account_no,
        source.group_customer_no,
        source.group_customer_name,
        source.sub_enterprise_no,
        source.sub_enterprise_name,
        source.branch_name,
        {{ lookup_branch_code() }} as branch_code,
        source.opening_assets,
        source.closing_assets,
        source.contributions,
        source.outflow_incl_benefits,
        source.outflow,
        source.benefit_payments,
        source.investment_income,
        source.period_return,
        source.load_id,
        source.source_file,
        source.source_sheet,
        source.source_row,
        source.loaded_at
    -- the raw table itself: the view then depends on the columns named here alone (a
    -- `select *` would tie it to every column, and a migration could not change or drop one
    -- it does not read)
    from {{ source('raw', 'annuity_performance') }} as source
    left join branches
        on branches.branch_name = source.branch_name
    left join product_lines
        on product_lines.business_type = source.business_type

),

resolved as (

    {{ resolve_company_id('looked_up', with_account_no=true) }}

)

select * from resolved
