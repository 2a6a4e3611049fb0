"""The product task marks each predictions.csv row with the patient's SPLIT (train/test), as it split them.

No training: the task's untrained early+full network scores the site's patients through the task's own
``evaluate_fn`` (the same code that runs after the last round), which is all that writes the rows.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from evaluation.metrics import read_predictions
from fl_client.federated import ClientSettings, fusion_task
from fl_client.train import SiteInputs, save_site_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from model_records import GLOBAL_GROUPS, N_CLINICAL, N_GLOBAL, make_records


@pytest.mark.parametrize("n_site", [16, 13])
def test_fusion_task_writes_the_split_it_trains_on(tmp_path: Path, n_site: int) -> None:
    records = [r for r in make_records(2 * n_site, seed=9, sites=2) if r.site == "S01"]
    inputs = SiteInputs("S01", records, [f"g{i}" for i in range(N_GLOBAL)], GLOBAL_GROUPS,
                        [f"c{i}" for i in range(N_CLINICAL)])
    save_site_inputs(inputs, tmp_path / "inputs" / "model_inputs.pt")
    task = fusion_task("S01", tmp_path / "inputs", ClientSettings(mode="dp-he", local_epochs=1, batch_size=8))
    assert task.split is not None and task.evaluate_fn is not None
    train, test = task.split
    task.evaluate_fn(task.model_fn(), task.data, tmp_path / "site")
    rows = read_predictions(tmp_path / "site" / "predictions.csv")
    per_subject = rows.drop_duplicates("USUBJID").set_index("USUBJID")["SPLIT"]
    assert set(per_subject[per_subject == "train"].index) == set(train)
    assert set(per_subject[per_subject == "test"].index) == set(test)
    assert len(per_subject) == len(records) and len(test) == len(records) - round(0.75 * len(records))


def test_fusion_task_writes_each_modes_own_label_and_rows_only_where_the_mode_scores(tmp_path: Path) -> None:
    """Early rows carry the response label, full rows the durable-benefit label (empty where undefined), and a
    patient without a T2 scan has an early-mode row and no full-mode row (as the centralized run writes them)."""
    records = [r for r in make_records(40, seed=11, sites=2) if r.site == "S01"]
    no_t2, unknown = records[0], records[1]
    no_t2.n_scans, no_t2.responder["full"], no_t2.label_day["full"] = 2, math.nan, math.inf
    unknown.responder["full"], unknown.label_day["full"] = math.nan, math.inf  # censored before the landmark
    for r in records[2:5]:  # responders without durable benefit and the reverse: the two labels disagree here
        r.responder["full"] = 1.0 - r.responder["early"]
    inputs = SiteInputs("S01", records, [f"g{i}" for i in range(N_GLOBAL)], GLOBAL_GROUPS,
                        [f"c{i}" for i in range(N_CLINICAL)])
    save_site_inputs(inputs, tmp_path / "inputs" / "model_inputs.pt")
    task = fusion_task("S01", tmp_path / "inputs", ClientSettings(mode="dp-he", local_epochs=1, batch_size=8))
    assert task.evaluate_fn is not None
    task.evaluate_fn(task.model_fn(), task.data, tmp_path / "site")
    rows = read_predictions(tmp_path / "site" / "predictions.csv")
    early = rows[rows["MODE"] == "early"].set_index("USUBJID")["LABEL"]
    full = rows[rows["MODE"] == "full"].set_index("USUBJID")["LABEL"]
    assert set(early.index) == {r.usubjid for r in records}
    assert set(full.index) == {r.usubjid for r in records} - {no_t2.usubjid}
    assert early.to_dict() == {r.usubjid: r.responder["early"] for r in records}
    assert math.isnan(full[unknown.usubjid])
    by_id = {r.usubjid: r for r in records}
    assert full.drop(unknown.usubjid).to_dict() == {u: by_id[u].responder["full"] for u in full.index
                                                    if u != unknown.usubjid}
    assert all(full[r.usubjid] != early[r.usubjid] for r in records[2:5])  # each row has its own task's label
