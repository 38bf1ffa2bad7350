-- Monthly totals per branch and product line: assets and flows from 规模明细 beside fees
-- from 收入明细. Incremental by period window, like the facts it reads.
--
-- The two sides are combined as a full outer combination on the grain (a branch/product
-- line can have fees but no assets, or the reverse). It is written as union all + group by
-- rather than a full outer join because product_line_code is null when business_type is
-- missing: join equality would split those rows into two groups, group by keeps them as one,
-- and postgres cannot full-join on "is not distinct from".
{{
    config(
        pre_hook="{{ delete_partition_window('period') }}",
        indexes=[{'columns': ['period']}],
    )
}}

with performance as (

    select
        period,
        branch_code,
        product_line_code,
        count(*) as performance_row_count,
        sum(opening_assets) as opening_assets,
        sum(closing_assets) as closing_assets,
        sum(contributions) as contributions,
        sum(outflow_incl_benefits) as outflow_incl_benefits,
        sum(investment_income) as investment_income
    from {{ ref('fct_annuity_performance') }}
    {% if is_incremental() %}
    where {{ in_partition_window('period') }}
    {% endif %}
    group by period, branch_code, product_line_code

),

income as (

    select
        period,
        branch_code,
        product_line_code,
        count(*) as income_row_count,
        sum(fixed_fee) as fixed_fee,
        sum(variable_fee) as variable_fee,
        sum(rebate) as rebate,
        sum(fee_income) as fee_income,
        sum(tax) as tax
    from {{ ref('fct_annuity_income') }}
    {% if is_incremental() %}
    where {{ in_partition_window('period') }}
    {% endif %}
    group by period, branch_code, product_line_code

),

combined as (

    select
        period, branch_code, product_line_code,
        performance_row_count, opening_assets, closing_assets, contributions,
        outflow_incl_benefits, investment_income,
        0 as income_row_count,
        null::numeric as fixed_fee, null::numeric as variable_fee, null::numeric as rebate,
        null::numeric as fee_income, null::numeric as tax
    from performance

    union all

    select
        period, branch_code, product_line_code,
        0 as performance_row_count,
        null::numeric, null::numeric, null::numeric, null::numeric, null::numeric,
        income_row_count, fixed_fee, variable_fee, rebate, fee_income, tax
    from income

)

-- a side with no rows reads as 0, not null: the row counts say whether a side was present
select
    period,
    branch_code,
    product_line_code,
    coalesce(sum(opening_assets), 0) as opening_assets,
    coalesce(sum(closing_assets), 0) as closing_assets,
    coalesce(sum(contributions), 0) as contributions,
    coalesce(sum(outflow_incl_benefits), 0) as outflow_incl_benefits,
    (coalesce(sum(contributions), 0) - coalesce(sum(outflow_incl_benefits), 0)) as net_flow,
    coalesce(sum(investment_income), 0) as investment_income,
    coalesce(sum(fixed_fee), 0) as fixed_fee,
    coalesce(sum(variable_fee), 0) as variable_fee,
    coalesce(sum(rebate), 0) as rebate,
    coalesce(sum(fee_income), 0) as fee_income,
    coalesce(sum(tax), 0) as tax,
    sum(performance_row_count)::bigint as performance_row_count,
    sum(income_row_count)::bigint as income_row_count
from combined
group by period, branch_code, product_line_code
