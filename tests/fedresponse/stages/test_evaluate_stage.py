"""The evaluate demo stage picks the centralized run for the PI report and prints the federated run beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedresponse.stages.evaluate import federated_line, find_run


@pytest.mark.parametrize(("artifacts", "expected"), [
    ({"run:centralized": Path("c"), "run:federated": Path("f")}, Path("c")),
    ({"run:federated": Path("f")}, Path("f")),
    ({"run:other": Path("o")}, Path("o")),
])
def test_find_run_prefers_the_centralized_run(artifacts: dict[str, Path], expected: Path) -> None:
    assert find_run(artifacts) == expected


def test_federated_line_puts_both_modes_side_by_side() -> None:
    def metrics(early: float, full: float) -> dict[str, object]:
        return {"pooled": {"early": {"auc": early, "auc_ci": [early - 0.1, early + 0.1]},
                           "full": {"auc": full, "auc_ci": [full - 0.05, full + 0.05]}}}

    line = federated_line(metrics(0.61, 0.72), metrics(0.66, 0.8))
    assert line == ("pooled AUC early: federated 0.610 (0.510–0.710) vs centralized 0.660 (0.560–0.760); "
                    "full: federated 0.720 (0.670–0.770) vs centralized 0.800 (0.750–0.850)")
