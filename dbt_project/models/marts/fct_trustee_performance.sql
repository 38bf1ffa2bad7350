-- 受托业绩 facts by report month. Incremental by report_date window: see macros/partition_window.sql.
{{
    config(
        pre_hook="{{ delete_partition_window('report_date') }}",
        indexes=[{'columns': ['report_date']}],
    )
}}

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
    source_row
from {{ ref('stg_trustee_performance') }}
{% if is_incremental() %}
where {{ in_partition_window('report_date') }}
{% endif %}
