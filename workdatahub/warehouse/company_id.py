"""The temporary company_id, the Python twin of dbt's `temp_company_id` macro.

A customer that no reference table resolves still needs a company_id that is the same
on every run and in every month, so reports can group by it until the reference data
catches up. It is `IN` + 16 upper-case base32 characters of the first 10 bytes (80 bits)
of sha256 over the UTF-8 normalised customer name. 80 bits split exactly into 16 base32
characters, so there is no `=` padding.

dbt computes the same value in SQL (dbt_project/macros/temp_company_id.sql); the two must
agree byte for byte. A missing name (None) hashes as the empty string there and here, so
every nameless row lands on one documented id, `IN4OYMIQUY7QOBJGX3`.
"""

from __future__ import annotations

import base64
import hashlib

TEMP_ID_PREFIX = "IN"


def temp_company_id(normalised_name: str | None) -> str:
    """`IN` + base32 of sha256(name)[:10]; the name must already be normalised."""
    name = normalised_name or ""
    digest = hashlib.sha256(name.encode("utf-8")).digest()[:10]
    return TEMP_ID_PREFIX + base64.b32encode(digest).decode("ascii")
