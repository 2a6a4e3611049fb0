"""Model inputs from graphs, CRF and reference labels: label rules by case, encodings by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from fl_client.featurize import (
    CLINICAL_NAMES,
    MEASUREMENT_NAMES,
    _labels,
    clinical_vector,
    global_names,
    global_trajectory,
    measurement_trajectory,
    shape_descriptors,
    site_inputs,
)
from models.exceptions import ModelInputError
from radiomics.node_features import NODE_FEATURES

COLUMN = {name: index for index, name in enumerate(NODE_FEATURES)}


def _graph(usubjid: str = "FEDRESP-S01-0001") -> Data:
    t, v = 3, 4
    x = torch.zeros(t, v, len(NODE_FEATURES))
    x[..., COLUMN["node_volume_ratio_t0"]] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    x[..., COLUMN["stat_mean"]] = torch.tensor([10.0, 20.0, 30.0, 40.0])  # HU
    x[..., COLUMN["cm_contrast"]] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    x[..., COLUMN["cm_joint_entr"]] = 5.0
    valid = torch.ones(t, v, dtype=torch.bool)
    valid[2, 3] = False
    x[2, 3] = 0.0
    x[2, 3, 0] = 1.0
    return Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]]), node_valid=valid,
                days=torch.tensor([-7.0, 62.0, 104.0]),
                pos=torch.tensor([[5.0, 0, 0], [-5.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]]),
                time_valid=torch.ones(t, dtype=torch.bool), tumour_volume=torch.tensor([10.0, 5.0, 2.5]),
                usubjid=usubjid, num_nodes=v)


def test_global_trajectory_by_hand() -> None:
    g = global_trajectory(_graph(), dhi=[0.0, 0.2, 0.4])
    names, groups = global_names(True, with_measurements=False)
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
    # texture group: volume-weighted GLCM means, same weights as the intensity group
    assert g[0, col["tumour_cm_contrast"]].item() == pytest.approx(3.0)  # (0.1 + 0.4 + 0.9 + 1.6) / 1.0
    assert g[2, col["tumour_cm_contrast"]].item() == pytest.approx(1.4 / 0.6, rel=1e-5)
    assert g[:, col["tumour_cm_joint_entr"]].tolist() == pytest.approx([5.0] * 3)
    assert g[:, col["tumour_cm_inv_diff_norm"]].tolist() == pytest.approx([0.0] * 3)


def test_tumour_and_ring_columns_are_computed_over_their_own_nodes() -> None:
    """With a layout of 1 shell and 1 ring (2 sectors each), nodes 0-1 are tumour and 2-3 the ring."""
    from radiomics.subregions import SubregionSpec

    spec = SubregionSpec(n_shells=1, ring_edges_mm=(0.0, 3.0), n_sectors=2)
    graph = _graph()
    graph.x[1, 2:, COLUMN["stat_mean"]] += 100.0  # peritumoral inflammation at T1 (ring nodes only)
    g = global_trajectory(graph, spec=spec)
    col = {n: i for i, n in enumerate(global_names(False, with_measurements=False)[0])}
    # tumour: (0.1·10 + 0.2·20) / 0.3; ring: (0.3·30 + 0.4·40) / 0.7, at T1 + 100 HU
    assert g[0, col["tumour_mean"]].item() == pytest.approx(5.0 / 0.3, rel=1e-5)
    assert g[1, col["tumour_mean"]].item() == pytest.approx(5.0 / 0.3, rel=1e-5)  # blind to the ring's change
    assert g[0, col["ring_mean"]].item() == pytest.approx(25.0 / 0.7, rel=1e-5)
    assert g[:, col["ring_mean_change_t0"]].tolist() == pytest.approx([0.0, 100.0, 30.0 - 25.0 / 0.7], rel=1e-5)
    assert g[0, col["tumour_cm_contrast"]].item() == pytest.approx(0.5 / 0.3, rel=1e-5)
    assert g[0, col["ring_cm_contrast"]].item() == pytest.approx(2.5 / 0.7, rel=1e-5)
    assert g[0, col["empty_subregion_fraction"]].item() == 0.0 and g[2, col["empty_subregion_fraction"]].item() == 0.0
    with pytest.raises(ModelInputError, match="SubregionSpec lays out 6"):
        global_trajectory(graph, spec=SubregionSpec(n_shells=2, ring_edges_mm=(0.0, 3.0), n_sectors=2))


def test_every_global_column_is_named_and_grouped() -> None:
    g = global_trajectory(_graph(), dhi=[0.0, 0.2, 0.4])
    for with_dhi, width in ((True, g.shape[1]), (False, g.shape[1] - 1)):
        names, groups = global_names(with_dhi, with_measurements=False)
        assert len(names) == len(groups) == width == len(set(names))
        assert global_names(with_dhi)[0] == [*names, *MEASUREMENT_NAMES]
    assert global_trajectory(_graph()).shape[1] == len(global_names(False, with_measurements=False)[0])
    assert {"volume", "intensity", "texture", "heterogeneity", "shape", "peritumoral", "peritumoral_change",
            "recist"} <= set(global_names(False)[1])


def test_shape_descriptors_match_numpy_weighted_covariance() -> None:
    rng = np.random.default_rng(3)
    pos = rng.normal(0, 10, size=(9, 3))
    w = rng.random((3, 9))
    w[2] = 0.0  # a vanished tumour: no weight anywhere
    w[:2] /= w[:2].sum(1, keepdims=True)
    got = shape_descriptors(torch.tensor(pos), torch.tensor(w, dtype=torch.float32)).numpy()
    for t in range(2):
        centre = np.average(pos, axis=0, weights=w[t])
        cov = np.cov(pos.T, aweights=w[t], bias=True)
        eig = np.linalg.eigvalsh(cov)
        expected = [np.linalg.norm(centre), np.sqrt(np.trace(cov)), 1 - eig[0] / eig[-1]]
        np.testing.assert_allclose(got[t], expected, rtol=1e-4)
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([0.5, 0.5, 0.0, 0.0], (0.0, 5.0, 1.0)),  # two opposite nodes: centred, radius 5 mm, a line
        ([1.0, 0.0, 0.0, 0.0], (5.0, 0.0, 0.0)),  # all volume in one node: shifted 5 mm, no spread
    ],
)
def test_shape_descriptors_by_hand(weights: list[float], expected: tuple[float, float, float]) -> None:
    got = shape_descriptors(_graph().pos, torch.tensor([weights]))[0].tolist()
    assert got == pytest.approx(list(expected), abs=1e-5)


@pytest.mark.parametrize("drop", ["columns", "pos"])
def test_graph_from_another_radiomics_version_is_refused(drop: str) -> None:
    graph = _graph()
    if drop == "columns":
        graph.x = graph.x[..., :12]
    else:
        del graph.pos
    with pytest.raises(ModelInputError, match="rebuild the sub-region graphs"):
        global_trajectory(graph)


@pytest.mark.parametrize(
    ("responder", "ipfs_days", "ipfs_event", "source", "pseudo", "calls", "expected"),
    [
        ("Y", 400, 0, "CENSORED_LAST_ASSESSMENT", "N", ("iPR", "iPR"), (1.0, 1.0, 183.0, 1.0, math.nan)),  # durable
        ("N", 150, 1, "ICPD", "N", ("iSD", "iSD"), (0.0, 0.0, 183.0, 0.0, math.nan)),  # progressed before 6 months
        ("N", 62, 1, "ICPD", "N", ("iUPD", "iCPD"), (0.0, 0.0, 183.0, 0.0, 0.0)),  # early progressor: a negative
        ("N", 150, 0, "CENSORED_NEW_THERAPY", "N", ("iSD", "iSD"), (0.0, math.nan, math.inf, math.nan, math.nan)),
        ("N", 250, 1, "ICPD", "N", ("iSD", "iSD"), (0.0, 1.0, 183.0, 0.0, math.nan)),  # benefit at 6, not 12 months
        ("Y", 300, 0, "CENSORED_LAST_ASSESSMENT", "Y", ("iUPD", "iPR"), (1.0, 1.0, 183.0, math.nan, 1.0)),  # pseudo
        ("N", 300, 1, "ICPD", "Y", ("iUPD", "iSD"), (0.0, 1.0, 183.0, 0.0, 1.0)),  # resolved at T2, progressed later
        ("N", 90, 1, "DEATH", "N", ("iUPD", ""), (0.0, 0.0, 183.0, 0.0, math.nan)),  # died before confirmation
    ],
)
def test_label_rules(responder: str, ipfs_days: int, ipfs_event: int, source: str, pseudo: str,
                     calls: tuple[str, str], expected: tuple[float, ...]) -> None:
    ref = pd.Series({"RESPONDER": responder, "IPFS_DAYS": ipfs_days, "IPFS_EVENT": ipfs_event,
                     "IPFS_SOURCE": source, "PSEUDOPROG": pseudo})
    out = _labels(ref, last_assessment=230.0, t2_day=104.0, durable_day=183, t1_call=calls[0], t2_call=calls[1])
    early, full, full_day, dcb12, pseudo_label = expected
    assert out["responder"]["early"] == early  # type: ignore[index]
    assert out["label_day"]["early"] == 230.0  # type: ignore[index]
    np.testing.assert_equal([out["responder"]["full"], out["label_day"]["full"], out["responder"]["dcb12"],  # type: ignore[index]
                             out["pseudo"]], [full, full_day, dcb12, pseudo_label])


def test_without_a_t2_scan_only_the_early_task_is_defined() -> None:
    ref = pd.Series({"RESPONDER": "Y", "IPFS_DAYS": 400, "IPFS_EVENT": 0, "IPFS_SOURCE": "CENSORED_LAST_ASSESSMENT"})
    out = _labels(ref, last_assessment=230.0, t2_day=None, durable_day=183)
    assert out["responder"]["early"] == 1.0  # type: ignore[index]
    assert math.isnan(out["responder"]["full"]) and math.isnan(out["responder"]["dcb12"])  # type: ignore[index]


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
    visits = pd.DataFrame([{"USUBJID": usubjid, "VISIT": v, "ADY": d, "RECIST_OVR": r, "SLD_MM": sld,
                            "PCHG_BASE": pchg, "NEWLES": new}
                           for v, d, r, sld, pchg, new in [("T0", -7, "", 50.0, None, None),
                                                           ("T1", 62, "PR", 30.0, -40.0, "N"),
                                                           ("T2", 104, "PR", 25.0, -50.0, "N"),
                                                           ("FU1", 167, "PR", 25.0, -50.0, "N")]])
    dhi = pd.DataFrame([{"USUBJID": usubjid, "FROM": "T0", "TO": "T1", "DHI": 0.3},
                        {"USUBJID": usubjid, "FROM": "T1", "TO": "T2", "DHI": float("nan")}])
    return crf, reference, visits, dhi


def test_site_inputs_assembles_and_skips() -> None:
    crf, reference, visits, dhi = _tables("FEDRESP-S01-0001")
    inputs = site_inputs("S01", [_graph(), _graph("FEDRESP-S01-0099")], crf, reference, visits, dhi)
    assert [r.usubjid for r in inputs.records] == ["FEDRESP-S01-0001"]  # 0099 has no CRF/reference
    record = inputs.records[0]
    assert record.recist_t1 == "PR" and record.label_day["early"] == 167.0
    col = {n: i for i, n in enumerate(inputs.global_names)}
    assert record.globals_[:, col["dhi"]].tolist() == pytest.approx([0.0, 0.3, 0.0])  # NaN DHI interval → 0
    assert inputs.global_names[-3:] == list(MEASUREMENT_NAMES) and inputs.clinical_names == list(CLINICAL_NAMES)
    assert record.globals_.shape == (3, len(inputs.global_names))
    assert record.globals_[:, col["sld_change_base"]].tolist() == pytest.approx([0.0, -0.4, -0.5])


def test_site_without_any_usable_subject_is_an_error() -> None:
    crf, reference, visits, dhi = _tables("FEDRESP-S01-0002")
    with pytest.raises(ModelInputError, match="run ingest, assess and radiomics graphs"):
        site_inputs("S01", [_graph()], crf, reference, visits, dhi)


def test_model_inputs_of_an_older_featurizer_are_detected_and_refused_outside_a_store(tmp_path: Path) -> None:
    from fedresponse.featurize import current_inputs
    from fl_client.featurize import stale_columns
    from fl_client.train import SiteInputs, save_site_inputs

    crf, reference, visits, dhi = _tables("FEDRESP-S01-0001")
    current = site_inputs("S01", [_graph()], crf, reference, visits, dhi)
    assert stale_columns(current) is None
    names, groups = current.global_names[:17], current.global_groups[:17]  # the 17 names of the first featurizer
    old = SiteInputs("S01", current.records, names, groups, current.clinical_names)
    assert "34 global columns" in (stale_columns(old) or "")  # 30 image columns, dhi, 3 measurements
    renamed = [f"c{i}" for i in range(len(current.global_names))]  # consistent columns of one's own: accepted
    assert stale_columns(SiteInputs("S01", current.records, renamed, current.global_groups, [])) is None
    without_recist = SiteInputs("S01", [], current.global_names[:-3], current.global_groups[:-3], [])
    assert "global columns" in (stale_columns(without_recist) or "")  # ours, but an older version
    save_site_inputs(old, tmp_path / "model_inputs.pt")
    with pytest.raises(ModelInputError, match="re-run the featurize step"):
        current_inputs(tmp_path / "model_inputs.pt", "cpu", 0, 183)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("T0", 50.0, None, None), ("T1", 30.0, -40.0, "N"), ("T2", 60.0, 20.0, "Y")],
         [[math.log1p(50), 0, 0], [math.log1p(30), -0.4, 0], [math.log1p(60), 0.2, 1]]),
        # T1 not evaluable (NE): the T0 values carry forward; a new lesion is still recorded
        ([("T0", 40.0, None, None), ("T1", None, None, "Y"), ("T2", 20.0, -50.0, "N")],
         [[math.log1p(40), 0, 0], [math.log1p(40), 0, 1], [math.log1p(20), -0.5, 0]]),
        # T2 row absent (a later visit only): carried forward from T1
        ([("T0", 10.0, None, None), ("T1", 5.0, -50.0, "N")],
         [[math.log1p(10), 0, 0], [math.log1p(5), -0.5, 0], [math.log1p(5), -0.5, 0]]),
    ],
)
def test_measurement_trajectory(rows: list[tuple[str, float | None, float | None, str | None]],
                                expected: list[list[float]]) -> None:
    visits = pd.DataFrame([{"VISIT": v, "SLD_MM": s, "PCHG_BASE": p, "NEWLES": n} for v, s, p, n in rows])
    np.testing.assert_allclose(measurement_trajectory(visits).numpy(), np.array(expected), rtol=1e-6, atol=1e-7)


def test_a_patient_without_a_t2_scan_stays_in_early_mode() -> None:
    crf, reference, visits, dhi = _tables("FEDRESP-S01-0001")
    graph = _graph()
    for key in ("x", "node_valid", "days", "time_valid", "tumour_volume"):
        setattr(graph, key, getattr(graph, key)[:2])
    record = site_inputs("S01", [graph], crf, reference, visits[visits["VISIT"] != "T2"], dhi).records[0]
    assert record.n_scans == 2 and record.recist_t2 is None and record.graph.x.shape[0] == 3
    assert record.responder["early"] == 1.0 and math.isnan(record.responder["full"])
    assert not record.graph.node_valid[2].any() and record.graph.days[2] > record.graph.days[1]  # no zero interval
    assert torch.isfinite(record.globals_).all()


def test_populations_early_mode_keeps_patients_without_t2() -> None:
    """EARLYFL ∪ EFFFL is featurized: a T0+T1 patient without T2 (EARLYFL only) has its early label and a NaN
    full-mode label even when its graph holds a T2 slot; a patient without T1 (in neither) is left out."""
    from evaluation.populations import derive_populations
    from evaluation.protocol import load_protocol

    ids = ["FEDRESP-S01-0001", "FEDRESP-S01-0002", "FEDRESP-S01-0003"]
    tables = [_tables(u) for u in ids]
    crf, reference, visits, dhi = (pd.concat([t[i] for t in tables], ignore_index=True) for i in range(4))
    scanned = {ids[0]: ("T0", "T1", "T2"), ids[1]: ("T0", "T1"), ids[2]: ("T0", "T2")}
    scans = pd.DataFrame([(u, v) for u, vs in scanned.items() for v in vs], columns=["USUBJID", "VISIT"])
    eligibility = pd.DataFrame({"USUBJID": ids, "ELIGIBLE": True, "REASONS": ""})
    pop = derive_populations("S01", ids, eligibility, None, scans, reference, load_protocol().populations)
    assert pop["EARLYFL"].tolist() == ["Y", "Y", "N"] and pop["EFFFL"].tolist() == ["Y", "N", "N"]
    inputs = site_inputs("S01", [_graph(u) for u in ids], crf, reference, visits, dhi, populations=pop)
    records = {r.usubjid: r for r in inputs.records}
    assert sorted(records) == ids[:2]  # 0003 (no T1) is in neither population
    full, early_only = records[ids[0]], records[ids[1]]
    assert full.responder["early"] == early_only.responder["early"] == 1.0
    assert full.responder["full"] == 1.0 and full.label_day["full"] == 183.0
    assert math.isnan(early_only.responder["full"]) and math.isnan(early_only.responder["dcb12"])
    assert early_only.label_day["full"] == math.inf
