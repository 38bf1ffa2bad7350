{{ config(meta={"dagster": {"ref": {"name": "fct_monthly_branch_product_line"}}}) }}

-- For each month, the marts must carry exactly the raw rows and amounts: staging only adds
-- lookups (left joins over de-duplicated reference data), so any difference means rows were
-- lost or multiplied on the way. Checked per month, both for the facts and for the monthly
-- summary. With vars period_start/period_end only that window is compared (a partitioned run
-- checks what it built); without them every month.
-- Returns one row per (check, period) that disagrees.
-- assets = closing_assets for 规模明细, fund_scale for 受托业绩.
with measures as (

    -- raw side
    select 'annuity_performance' as domain, period, 'raw' as side,
        count(*)::numeric as row_count,
        sum(closing_assets) as assets, sum(contributions) as contributions,
        null::numeric as fee_income, null::numeric as tax
    from {{ source('raw', 'annuity_performance') }}
    where {{ in_partition_window('period') }}
    group by period

    union all

    select 'annuity_income', period, 'raw',
        count(*), null, null, sum(fixed_fee + variable_fee + rebate), sum(tax)
    from {{ source('raw', 'annuity_income') }}
    where {{ in_partition_window('period') }}
    group by period

    union all

    select 'trustee_performance', report_date, 'raw',
        count(*), sum(fund_scale), null, null, null
    from {{ source('raw', 'trustee_performance') }}
    where {{ in_partition_window('report_date') }}
    group by report_date

    -- facts
    union all

    select 'annuity_performance', period, 'fact',
        count(*), sum(closing_assets), sum(contributions), null, null
    from {{ ref('fct_annuity_performance') }}
    where {{ in_partition_window('period') }}
    group by period

    union all

    select 'annuity_income', period, 'fact',
        count(*), null, null, sum(fee_income), sum(tax)
    from {{ ref('fct_annuity_income') }}
    where {{ in_partition_window('period') }}
    group by period

    union all

    select 'trustee_performance', report_date, 'fact',
        count(*), sum(fund_scale), null, null, null
    from {{ ref('fct_trustee_performance') }}
    where {{ in_partition_window('report_date') }}
    group by report_date

    -- monthly summary, split back into its two sides
    union all

    select 'annuity_performance', period, 'summary',
        sum(performance_row_count), sum(closing_assets), sum(contributions), null, null
    from {{ ref('fct_monthly_branch_product_line') }}
    where {{ in_partition_window('period') }}
    group by period

    union all

    select 'annuity_income', period, 'summary',
        sum(income_row_count), null, null, sum(fee_income), sum(tax)
    from {{ ref('fct_monthly_branch_product_line') }}
    where {{ in_partition_window('period') }}
    group by period

),

raw_side as (

    select * from measures where side = 'raw'

),

built_side as (

    select * from measures where side <> 'raw'

),

-- every (domain, period, built side) that should exist: a month present on either side
expected as (

    select domain, period, side from built_side
    union
    select raw_side.domain, raw_side.period, sides.side
    from raw_side
    cross join (values ('fact'), ('summary')) as sides (side)
    where not (raw_side.domain = 'trustee_performance' and sides.side = 'summary')

)

select
    expected.domain,
    expected.period,
    expected.side as compared_with_raw,
    raw_side.row_count as raw_row_count,
    built_side.row_count as built_row_count,
    raw_side.assets as raw_assets,
    built_side.assets as built_assets,
    raw_side.contributions as raw_contributions,
    built_side.contributions as built_contributions,
    raw_side.fee_income as raw_fee_income,
    built_side.fee_income as built_fee_income,
    raw_side.tax as raw_tax,
    built_side.tax as built_tax
from expected
left join raw_side
    on raw_side.domain = expected.domain and raw_side.period = expected.period
left join built_side
    on built_side.domain = expected.domain
    and built_side.period = expected.period
    and built_side.side = expected.side
where coalesce(raw_side.row_count, 0) <> coalesce(built_side.row_count, 0)
    or coalesce(raw_side.assets, 0) <> coalesce(built_side.assets, 0)
    or coalesce(raw_side.contributions, 0) <> coalesce(built_side.contributions, 0)
    or coalesce(raw_side.fee_income, 0) <> coalesce(built_side.fee_income, 0)
    or coalesce(raw_side.tax, 0) <> coalesce(built_side.tax, 0)
