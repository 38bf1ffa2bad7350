{#
  The branch and product-line lookups every annuity staging model needs, as CTEs named
  `branches` and `product_lines`: one row per key (the first code in order, so a duplicate
  key in the reference data can never multiply fact rows; the seed tests flag duplicates).
#}
{% macro reference_lookup_ctes() %}
branches as (

    select distinct on (trim(branch_name)) trim(branch_name) as branch_name, trim(branch_code) as branch_code
    from {{ ref('ref_branches') }}
    where nullif(trim(branch_code), '') is not null
    order by trim(branch_name), trim(branch_code)

),

product_lines as (

    select distinct on (trim(business_type)) trim(business_type) as business_type, trim(product_line_code) as product_line_code
    from {{ ref('ref_product_lines') }}
    where nullif(trim(product_line_code), '') is not null
    order by trim(business_type), trim(product_line_code)

)
{% endmacro %}
