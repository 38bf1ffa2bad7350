{#-
    Fails for every key the pipeline could never write: a customer name goes through the
    `company_name` rule (workdatahub/cleansing/rules.py) before it is looked up, which
    removes all whitespace and invisible (format) characters (a zero-width space) and writes text
    NFKC-normalised with its brackets full width. A reference key written otherwise
    (half-width brackets, a space, a zero-width space, full-width letters or digits, as an
    export may write them) never matches, and those rows get temporary ids.
-#}
{% test written_as_a_normalised_name(model, column_name) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} ~ '[[:space:]()\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF]'
    or normalize(translate({{ column_name }}, '（）', '()'), NFKC)
        <> translate({{ column_name }}, '（）', '()')

{% endtest %}
