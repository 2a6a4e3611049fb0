"""Model inputs from graphs, CRF and reference labels: label rules by case, encodings by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from fl_client.featurize import CLINICAL_NAMES, _labels, clinical_vector, global_names, global_trajectory, site_inputs
from models.exceptions import ModelInputError


def _graph(usubjid: str = "FEDRESP-S01-0001") -> Data:
    t, v = 3, 4
    x = torch.zeros(t, v, 12)
    x[..., 1] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # node volume / T0 volume
    x[..., 2] = torch.tensor([10.0, 20.0, 30.0, 40.0])  # stat_mean (HU)
    valid = torch.ones(t, v, dtype=torch.bool)
    valid[2, 3] = False
    x[2, 3] = 0.0
    x[2, 3, 0] = 1.0
    return Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]]), node_valid=valid,
                days=torch.tensor([-7.0, 62.0, 104.0]), pos=torch.randn(v, 3),
                time_valid=torch.ones(t, dtype=torch.bool), tumour_volume=torch.tensor([10.0, 5.0, 2.5]),
                usubjid=usubjid, num_nodes=v)


def test_global_trajectory_by_hand() -> None:
    g = global_trajectory(_graph(), dhi=[0.0, 0.2, 0.4])
    names, groups = global_names(True)
    assert g.shape == (3, len(names)) and len(groups) == len(names)
    col = {n: i for i, n in enumerate(names)}
    torch.testing.assert_close(g[:, col["log_volume_ml"]], torch.log(torch.tensor([10.0, 5.0, 2.5])))
    torch.testing.assert_close(g[:, col["log_volume_ratio_t0"]], torch.log(torch.tensor([1.0, 0.5, 0.25])))
    # volume-weighted mean HU: (0.1·10 + 0.2·20 + 0.3·30 + 0.4·40) / 1.0 = 30; at T2 node 3 is gone: 14/0.6
    assert g[0, col["tumour_mean"]].item() == pytest.approx(30.0)
    assert g[2, col["tumour_mean"]].item() == pytest.approx(14.0 / 0.6, rel=1e-5)
    assert g[0, col["subregion_sd_mean"]].item() == pytest.approx(float(np.std([10, 20, 30, 40])), rel=1e-5)
    assert g[2, col["empty_subregion_fraction"]].item() == pytest.approx(0.25)
    assert g[:, col["dhi"]].tolist() == pytest.approx([0.0, 0.2, 0.4])


@pytest.mark.parametrize(
    ("responder", "ipfs_days", "ipfs_event", "source", "pseudo", "expected"),
    [
        ("Y", 400, 0, "CENSORED_LAST_ASSESSMENT", "N", (1.0, 1.0, 183.0, math.nan)),  # durable
        ("N", 150, 1, "ICPD", "N", (0.0, 0.0, 150.0, 0.0)),  # progressed after T2, before 6 months; iUPD confirmed
        ("N", 62, 1, "ICPD", "N", (0.0, math.nan, math.inf, 0.0)),  # decided by T2: not a full-mode case
        ("N", 150, 0, "CENSORED_NEW_THERAPY", "N", (0.0, math.nan, math.inf, math.nan)),  # benefit unknown
        ("Y", 300, 0, "CENSORED_LAST_ASSESSMENT", "Y", (1.0, 1.0, 183.0, 1.0)),  # pseudoprogression
    ],
)
def test_label_rules(responder: str, ipfs_days: int, ipfs_event: int, source: str, pseudo: str,
                     expected: tuple[float, float, float, float]) -> None:
    ref = pd.Series({"RESPONDER": responder, "IPFS_DAYS": ipfs_days, "IPFS_EVENT": ipfs_event,
                     "IPFS_SOURCE": source, "PSEUDOPROG": pseudo})
    out = _labels(ref, last_assessment=230.0, t2_day=104.0, durable_day=183)
    early, full, full_day, pseudo_label = expected
    assert out["responder"]["early"] == early  # type: ignore[index]
    assert out["label_day"]["early"] == 230.0  # type: ignore[index]
    np.testing.assert_equal([out["responder"]["full"], out["label_day"]["full"], out["pseudo"]],  # type: ignore[index]
                            [full, full_day, pseudo_label])


def test_clinical_encoding() -> None:
    row = pd.Series({"AGE": 62, "SEX": "F", "SMOKING": "CURRENT", "ECOG": 1, "STAGE": "IVB", "HISTOLOGY": "SQUAMOUS",
                     "EGFR": "NEGATIVE", "ALK": "UNKNOWN", "PDL1_TPS": 55, "LINE": 2})
    got = dict(zip(CLINICAL_NAMES, clinical_vector(row).tolist(), strict=True))
    assert got == pytest.approx({"age_decades": 6.2, "male": 0, "smoking_former": 0, "smoking_current": 1, "ecog": 1,
                                 "stage_iv": 1, "squamous": 1, "egfr_positive": 0, "alk_positive": 0,
                                 "pdl1_tps_fraction": 0.55, "line_2plus": 1})


def _tables(usubjid: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    crf = pd.DataFrame([{"USUBJID": usubjid, "AGE": 70, "SEX": "M"}])
    reference = pd.DataFrame([{"USUBJID": usubjid, "RESPONDER": "Y", "IPFS_DAYS": 300, "IPFS_EVENT": 0,
                               "IPFS_SOURCE": "CENSORED_LAST_ASSESSMENT", "PSEUDOPROG": "N"}])
    visits = pd.DataFrame([{"USUBJID": usubjid, "VISIT": v, "ADY": d, "RECIST_OVR": r}
                           for v, d, r in [("T0", -7, ""), ("T1", 62, "PR"), ("T2", 104, "PR"), ("FU1", 167, "PR")]])
    dhi = pd.DataFrame([{"USUBJID": usubjid, "FROM": "T0", "TO": "T1", "DHI": 0.3},
                        {"USUBJID": usubjid, "FROM": "T1", "TO": "T2", "DHI": float("nan")}])
    return crf, reference, visits, dhi


def test_site_inputs_assembles_and_skips() -> None:
    crf, reference, visits, dhi = _tables("FEDRESP-S01-0001")
    inputs = site_inputs("S01", [_graph(), _graph("FEDRESP-S01-0099")], crf, reference, visits, dhi)
    assert [r.usubjid for r in inputs.records] == ["FEDRESP-S01-0001"]  # 0099 has no CRF/reference
    record = inputs.records[0]
    assert record.recist_t1 == "PR" and record.label_day["early"] == 167.0
    assert record.globals_[:, -1].tolist() == pytest.approx([0.0, 0.3, 0.0])  # NaN DHI interval → 0
    assert inputs.global_names[-1] == "dhi" and inputs.clinical_names == list(CLINICAL_NAMES)


def test_site_without_any_usable_subject_is_an_error() -> None:
    crf, reference, visits, dhi = _tables("FEDRESP-S01-0002")
    with pytest.raises(ModelInputError, match="run ingest, assess and radiomics graphs"):
        site_inputs("S01", [_graph()], crf, reference, visits, dhi)
