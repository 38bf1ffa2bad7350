-- 收入明细 rows with branch, product line and company resolved like stg_annuity_performance.
-- The income sheet carries no 集团企业客户号, so the company_id chain skips the account step:
-- a customer resolved by account number in 规模明细 may resolve by name or get a temporary
-- id here until ref_company_names (or an override) knows the name.
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
        source.branch_name,
        {{ lookup_branch_code() }} as branch_code,
        source.fixed_fee,
        source.variable_fee,
        source.rebate,
        source.tax,
        source.load_id,
        source.source_file,
        source.source_sheet,
        source.source_row,
        source.loaded_at
    -- the raw table itself: the view then depends on the columns named here alone (a
    -- `select *` would tie it to every column, and a migration could not change or drop one
    -- it does not read)
    from {{ source('raw', 'annuity_income') }} as source
    left join branches
        on branches.branch_name = source.branch_name
    left join product_lines
        on product_lines.business_type = source.business_type

),

resolved as (

    {{ resolve_company_id('looked_up', with_account_no=false) }}

)

select * from resolved
