"""The one-line reasons operators read."""

from __future__ import annotations

import pytest

from workdatahub.errors import too_many_rejects


@pytest.mark.parametrize(
    ("rejected", "read", "limit", "shown"),
    [
        (1, 3, 0.2, "(33.3%) > max_reject_rate 20.0%"),
        # digits until the two differ: not "5.0% > 5.0%"
        (2520, 50_000, 0.05, "(5.04%) > max_reject_rate 5.00%"),
        (2501, 50_000, 0.05, "(5.002%) > max_reject_rate 5.000%"),
        (12, 10_000, 0.001, "(0.12%) > max_reject_rate 0.10%"),
        # a small share is not 0.0%, nor 5e-05%
        (5, 50_000, 0.0, "(0.01%) > max_reject_rate 0.00%"),
        (1, 2_000_000, 0.0, "(0.00005%) > max_reject_rate 0.00000%"),
        # nor a small limit (--max-reject-rate 0.0001 showed as 0.0%)
        (5, 5_000, 0.0001, "(0.10%) > max_reject_rate 0.01%"),
    ],
)
def test_a_refusal_shows_the_share_and_the_threshold_apart(
    rejected: int, read: int, limit: float, shown: str
) -> None:
    assert too_many_rejects(rejected, read, limit) == f"{rejected} of {read} rows rejected {shown}"
