-- 受托业绩 as loaded: the raw table is already typed and keyed, so staging only fixes the
-- column order and is the one place marts read it from.
select
    report_date,
    plan_code,
    company_code,
    return_rate,
    net_value,
    fund_scale,
    load_id,
    source_file,
    source_sheet,
    source_row,
    loaded_at
-- (the columns named: a view of `select *` would depend on every column of the raw table,
-- and a migration could not change or drop one it does not read)
from {{ source('raw', 'trustee_performance') }}
