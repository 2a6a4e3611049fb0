"""Figures: the data drawn is the data given (bar heights, lines, at-risk counts), files are valid PNG + SVG,
and saving is atomic."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation import figures as figs
from evaluation import figures_patients as pfigs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _visits_subjects() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for i, (base, changes) in enumerate([(50, [-10, -40, -45]), (80, [5, 25, 30]), (40, [-20, -25, 0])]):
        sid = f"FEDRESP-S01-{i + 1:04d}"
        rows.append({"USUBJID": sid, "VISIT": "T0", "ADY": -7, "SLD_MM": base, "PCHG_BASE": np.nan, "IRECIST_OVR": ""})
        for (visit, ady), c in zip((("T1", 62), ("T2", 104), ("FU1", 167)), changes, strict=True):
            rows.append(
                {
                    "USUBJID": sid,
                    "VISIT": visit,
                    "ADY": ady,
                    "SLD_MM": base * (1 + c / 100),
                    "PCHG_BASE": c,
                    "IRECIST_OVR": "iSD",
                }
            )
    subjects = pd.DataFrame(
        {
            "USUBJID": [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3)],
            "IBOR": ["iPR", "iUPD", "iSD"],
            "PD_ADY": [None, 104, None],
            "IUPD_ADY": [None, 104, None],
            "ICPD_ADY": [None, 167, None],
        }
    )
    return pd.DataFrame(rows), subjects


def test_waterfall_bars_are_best_changes_sorted_and_coloured_by_ibor() -> None:
    visits, subjects = _visits_subjects()
    fig = pfigs.waterfall_figure(visits, subjects, -30, 20)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == [5, -25, -45]  # best (minimum) change, descending order
    from matplotlib.colors import to_hex

    assert [to_hex(b.get_facecolor()) for b in bars] == [pfigs.IBOR_COLOURS[k] for k in ("iUPD", "iSD", "iPR")]


def test_spider_has_one_line_per_patient_through_the_changes() -> None:
    visits, subjects = _visits_subjects()
    ax = pfigs.spider_figure(visits, subjects).axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 4]
    assert len(lines) == 3
    drawn = sorted(tuple(float(v) for v in ln.get_ydata()) for ln in lines)
    assert drawn == [(0.0, -20.0, -25.0, 0.0), (0.0, -10.0, -40.0, -45.0), (0.0, 5.0, 25.0, 30.0)]


def test_km_figure_prints_numbers_at_risk() -> None:
    curve = ([10.0, 20.0, 30.0], [0.8, 0.5, 0.2], [0.6, 0.3, 0.05], [0.95, 0.7, 0.4])
    fig = figs.km_figure({"a": curve}, {"a": [5, 3, 1]}, [0, 15, 25])
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["Numbers at risk", "5", "3", "1"]


def test_roc_band_contains_the_curve() -> None:
    fpr, tpr = np.array([0, 0, 0.5, 1]), np.array([0, 0.5, 1, 1])
    fig = figs.roc_figure({"full": (fpr, tpr, 0.875, (0.6, 1.0), 4)})
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() >= 0 and band[:, 1].max() <= 1
    assert "AUC 0.88 (0.60–1.00)" in fig.axes[0].get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize(
    "make",
    [
        lambda: figs.calibration_figure([0.1, 0.6], [0.2, 0.7], [10, 5], 0.18),
        lambda: figs.dhi_box_figure({"responder": [1.0, 2.0, 1.5], "non-responder": [0.1, 0.3]}, 0.8),
        lambda: figs.bland_altman_figure([50, 60, 70], [51, 58, 71], 0.0, (-3.0, 3.0)),
        lambda: figs.consort_figure({"S01": {"screened": 10, "excluded": {"ECOG > 1": 2}, "analysed": 8}}),
        lambda: figs.privacy_figure({"S01": 3.2, "S02": 5.0}, {"S01": 8.0}, 1e-5),
        lambda: figs.orr_figure({"recist_confirmed": {"estimate": 0.3, "ci": [0.1, 0.5]}}),
        lambda: pfigs.swimmer_figure(
            _visits_subjects()[1],
            pd.DataFrame(
                {
                    "USUBJID": [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3)],
                    "PFS_DAYS": [300, 167, 200],
                    "PFS_EVENT": [0, 1, 0],
                }
            ),
        ),
        lambda: pfigs.interpretability_figure(
            "FEDRESP-S01-0001",
            _visits_subjects()[0],
            {"early": 0.7, "full": 0.8},
            {"early": 0.5, "full": 0.5},
            pd.Series({"dSLD": 0.4, "DHI": -0.2}),
        ),
    ],
)
def test_every_figure_saves_valid_png_and_svg(make: object, tmp_path: Path) -> None:
    paths = figs.save_figure(make(), tmp_path, "fig")  # type: ignore[operator]
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert ET.parse(paths["svg"]).getroot().tag.endswith("svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]


def test_save_is_atomic_when_drawing_fails(tmp_path: Path) -> None:
    fig = figs.new_figure()
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, r"$\notacommand$")  # mathtext error at draw time
    (tmp_path / "fig.png").write_bytes(b"old")
    with pytest.raises(ValueError):
        figs.save_figure(fig, tmp_path, "fig")
    assert (tmp_path / "fig.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def _swimmer() -> object:
    pfs = pd.DataFrame({"USUBJID": [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3)], "PFS_DAYS": [300, 167, 200],
                        "PFS_EVENT": [0, 1, 0]})
    return pfigs.swimmer_figure(_visits_subjects()[1], pfs)


def test_swimmer_legend_names_the_criterion_of_every_mark() -> None:
    legend = [t.get_text() for t in _swimmer().axes[0].get_legend().get_texts()]  # type: ignore[attr-defined]
    assert {"iUPD (iRECIST, unconfirmed)", "iCPD (iRECIST, confirmed)", "PD (RECIST 1.1)",
            "censored (iRECIST PFS)"} <= set(legend)
    assert {"iBOR iPR", "iBOR iUPD", "iBOR iSD"} <= set(legend)  # the bar colours have a key too
    for text in legend:
        assert "RECIST" in text or text.startswith("iBOR "), text


def test_interpretability_panel_never_labels_a_point_nan() -> None:
    visits = _visits_subjects()[0]
    visits.loc[visits["VISIT"] == "T0", "IRECIST_OVR"] = np.nan  # what pandas reads for an empty baseline cell
    fig = pfigs.interpretability_figure("FEDRESP-S01-0001", visits, {"early": 0.7, "full": 0.8},
                                        {"early": 0.5, "full": 0.5})
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels[0] == "T0 (baseline)" and labels[1] == "T1: iSD"
    assert not any("nan" in label.lower() for label in labels)


def test_orr_labels_name_the_criterion() -> None:
    assert figs.orr_label("recist_confirmed") == "RECIST 1.1, confirmed"
    assert figs.orr_label("irecist_unconfirmed") == "iRECIST, unconfirmed"


def test_consort_figure_reads_the_population_counts() -> None:
    flow = {"S01": {"enrolled": 12, "excluded": {"other malignancy": 1}, "eligible": 11, "analysed": 10,
                    "by_reason_not_analysed": {"imaging: T2 missing": 1}}}
    texts = " ".join(t.get_text() for t in figs.consort_figure(flow).axes[0].texts)
    for expected in ("enrolled n=12", "excluded n=1", "eligible n=11", "not analysed n=1", "analysed n=10"):
        assert expected in texts
