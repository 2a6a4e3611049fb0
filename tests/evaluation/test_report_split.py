"""The reports are split by the hospital wall: the central PI report is built from the hand-off folder alone and
holds no patient-level value; each site report holds that site's patient-level views.

References: scikit-learn on the union of the sites' rows (pooled AUC within the stated binning bound), the
USUBJIDs and per-patient scores of the predictions files (must not appear centrally), the protocol's
``statistics`` limits (configs/study.yaml).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evaluation import report_html as rh
from evaluation.central_report import read_handoff, stop_line, write_central_evaluation
from evaluation.exceptions import EvaluationInputError
from evaluation.protocol import load_protocol
from evaluation.site_report import AGGREGATE_FILE, SITE_SECTIONS, SUMMARY_FILE, apply_small_cell_rules

USUBJID = re.compile(r"[A-Z][A-Z0-9]{1,11}-[A-Z0-9]{2,8}-\d{4}")
CENTRAL_FIGURES = {"consort", "roc_pooled", "calibration_full", "km_predicted", "km_reference", "orr_pooled",
                   "privacy_budget"}


def _union(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(run.rglob("predictions.csv"))], ignore_index=True)


def _text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


@pytest.fixture(scope="module")
def central_only(evaluated: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The central report rebuilt on a clean folder holding only the hand-off (what crossed the wall)."""
    root = tmp_path_factory.mktemp("central_only")
    handoff = root / "handoff"
    shutil.copytree(evaluated["handoff"], handoff)
    return {"handoff": handoff, **write_central_evaluation(handoff, root / "central")}


def test_the_handoff_holds_only_aggregate_files(central_only: dict[str, Path], synthetic_run: dict[str, Path]) -> None:
    files = sorted(p.relative_to(central_only["handoff"]).as_posix() for p in central_only["handoff"].rglob("*")
                   if p.is_file())
    assert files == ["S01/site_aggregate.bin", "S01/site_summary.json", "S02/site_aggregate.bin",
                     "S02/site_summary.json", "pooled_dhi_cox.json", "privacy.json", "run.json"]
    union = _union(synthetic_run["run"])
    for path in central_only["handoff"].rglob("*.json"):
        text = path.read_text()
        assert not USUBJID.search(text), (path, USUBJID.search(text))
        assert not any(f"{s:.6f}" in text for s in union["SCORE"].unique()), path
    n_values = json.loads((central_only["handoff"] / "S01" / SUMMARY_FILE).read_text())["aggregate"]["length"]
    assert (central_only["handoff"] / "S01" / AGGREGATE_FILE).stat().st_size == 8 * n_values  # plain float64 vector


def test_central_report_has_no_patient_level_value(central_only: dict[str, Path],
                                                    synthetic_run: dict[str, Path]) -> None:
    html = central_only["report"].read_text(encoding="utf-8")
    union = _union(synthetic_run["run"])
    assert not USUBJID.search(html), USUBJID.search(html)
    for usubjid in union["USUBJID"].unique():
        assert usubjid not in html and usubjid[-9:] not in html
    scores = {f"{s:.6f}" for s in union["SCORE"]} | {f"{s:.4f}" for s in union["DHI"]}
    assert not [s for s in scores if s in html]
    metrics_text = central_only["metrics"].read_text()
    assert not USUBJID.search(metrics_text)
    assert {p.stem for p in central_only["figures"].glob("*.png")} == CENTRAL_FIGURES
    for sid in ("patients", "interpretability"):
        assert f'id="{sid}"' not in html
    text = _text(central_only["report"])
    assert "No patient row, identifier or per-patient value crossed any site's wall" in text
    assert "site_summary.json, site_aggregate.bin" in text


def test_central_pooled_numbers_equal_the_union_within_binning(central_only: dict[str, Path],
                                                               synthetic_run: dict[str, Path]) -> None:
    metrics = json.loads(central_only["metrics"].read_text())
    union = _union(synthetic_run["run"])
    for mode in ("early", "full"):
        rows = union[union["MODE"] == mode]
        pooled = metrics["pooled"][mode]
        assert abs(pooled["auc"] - roc_auc_score(rows["LABEL"], rows["SCORE"])) <= pooled["auc_binning_bound"] + 1e-12
    assert metrics["pooled"]["n"] == union["USUBJID"].nunique()
    assert set(metrics["sites"]) == {"S01", "S02"} and metrics["pooling"]["codec"] == "PlainCodec"
    assert metrics["pooled"]["dhi_hr"] is not None  # the interactive pooled Cox fit reached the centre as a result


def test_central_report_reads_in_the_pis_order(central_only: dict[str, Path]) -> None:
    text = _text(central_only["report"])
    protocol = load_protocol()
    order = [protocol.registration.public_title, protocol.registration.number, "Data cut-off",
             f"study day {protocol.data_cutoff_day}", "Run", "Contents", "Participant flow (CONSORT)", "all sites",
             "Headline results", "Primary endpoint", "Secondary endpoint: progression-free survival"]
    position = 0
    for item in order:  # each found after the one before it
        found = text.find(item, position)
        assert found >= 0, (item, text[position:position + 300])
        position = found + len(item)
    assert "Figure 1." in text and "Figure 7." in text
    assert re.search(r"\bnan\b", text, flags=re.IGNORECASE) is None
    assert "PlainCodec-combined" not in text
    # captions follow the codec actually used (PlainCodec here): nothing claims encryption
    assert "summed unencrypted (PlainCodec" in text and "from unencrypted site histograms (PlainCodec" in text
    assert "CKKS-encrypted site histograms" not in text and "summed under CKKS" not in text


def test_estimates_spanning_the_null_or_below_the_minimum_are_marked() -> None:
    minimum = load_protocol().statistics.min_patients_estimate
    assert "CI includes 0.5" in rh.estimate(0.62, [0.41, 0.83], null=0.5, n=40)
    assert "flag" not in rh.estimate(0.82, [0.71, 0.93], null=0.5, n=40)
    assert f"n = {minimum - 2} &lt; {minimum}" in rh.estimate(0.9, [0.8, 1.0], null=0.5, n=minimum - 2)
    assert "HR" not in rh.estimate(1.3, [0.9, 1.8], null=1.0) and "CI includes 1" in rh.estimate(1.3, [0.9, 1.8],
                                                                                               null=1.0)
    assert "not estimable: only one class" in rh.estimate(None, None, reason="only one class")
    assert "not estimable" in rh.estimate(float("nan"), None) and "nan" not in rh.estimate(float("nan"), None)


def test_small_cells_and_small_sites_are_not_sent() -> None:
    rules = load_protocol().statistics
    small = rules.min_patients_estimate - 1
    block = {"early": {"n": small, "auc": 0.7, "auc_ci": [0.4, 0.9], "sensitivity": 0.5, "confusion":
                       {"tp": 2, "fp": 1, "tn": 3, "fn": 2}},
             "full": {"n": 60, "auc": 0.8, "auc_ci": [0.7, 0.9], "sensitivity": 0.7, "confusion":
                      {"tp": 20, "fp": 10, "tn": 20, "fn": 10}}, "n": 60}
    sent, suppressed = apply_small_cell_rules(block)
    assert sent["early"]["auc"] is None and "protocol minimum" in sent["early"]["auc_not_estimable"]
    assert sent["early"]["confusion"] is None and sent["early"]["n"] == small
    assert sent["full"]["auc"] == 0.8 and sent["full"]["confusion"] == block["full"]["confusion"]
    assert len(suppressed) == 2 and block["early"]["auc"] == 0.7  # the site keeps its own copy


def test_site_report_holds_the_patient_level_views(evaluated: dict) -> None:
    site = evaluated["sites"]["S01"]
    html = site["report"].read_text(encoding="utf-8")
    names = {p.stem for p in site["figures"].glob("*.png")}
    assert {"waterfall_S01", "spider_S01", "swimmer_S01", "panel_S01", "bland_altman_S01", "dhi_box_S01"} <= names
    assert USUBJID.search(html) is not None  # the panel names its patient: this report stays at the site
    assert all(f'id="{sid}"' in html for sid, _ in SITE_SECTIONS)
    summary = site["summary"].read_text()
    assert not USUBJID.search(summary)
    section = html[html.index('id="interpretability"'):html.index('id="dhi"')]
    shown = set(USUBJID.findall(section))
    assert shown and all("-S01-" in u for u in shown)  # per-patient attributions of this site only
    assert "top 3 attributions (full)" in section
    assert "S02" not in {p.stem.rsplit("_", 1)[-1] for p in site["figures"].glob("*.png")}


def test_central_step_needs_the_key_for_ckks_aggregates(central_only: dict[str, Path], tmp_path: Path) -> None:
    handoff = tmp_path / "handoff"
    shutil.copytree(central_only["handoff"], handoff)
    path = handoff / "S01" / SUMMARY_FILE
    summary = json.loads(path.read_text())
    summary["aggregate"]["codec"] = "CkksCodec"
    path.write_text(json.dumps(summary))
    with pytest.raises(EvaluationInputError, match="different codecs"):
        write_central_evaluation(handoff, tmp_path / "out")
    path2 = handoff / "S02" / SUMMARY_FILE
    path2.write_text(path2.read_text().replace('"PlainCodec"', '"CkksCodec"'))
    with pytest.raises(EvaluationInputError, match="--keys KEYDIR"):
        write_central_evaluation(handoff, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(EvaluationInputError, match=r"site_summary\.json"):
        read_handoff(tmp_path / "empty")


def test_stop_line_reads_the_run_summary() -> None:
    assert stop_line({"rounds_planned": 10, "rounds_completed": 4, "stop_reason": "privacy_budget"}) == \
        "stopped after round 4 of 10: privacy budget"
    assert stop_line({"rounds_planned": 5, "rounds_completed": 5, "stop_reason": "completed"}) == \
        "completed all 5 rounds"
    assert stop_line(None) is None
    written = {"rounds_configured": 20, "rounds_planned": 6, "rounds_completed": 6, "stop_reason": "privacy budget",
               "stop": "stopped after round 6 of 20: privacy budget"}  # as fl_server.planning writes it
    assert stop_line(written) == "stopped after round 6 of 20: privacy budget"


def test_synthetic_cohort_banner_and_run_summary_on_both_reports(synthetic_run: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    from evaluation.evaluate import load_run
    from evaluation.report import write_evaluation
    from evaluation.site_report import data_source

    run = tmp_path / "run"
    shutil.copytree(synthetic_run["run"], run)
    (run / "run_summary.json").write_text(json.dumps({"rounds_planned": 8, "rounds_completed": 3,
                                                      "stop_reason": "privacy budget"}))
    cohort = tmp_path / "cohort"
    shutil.copytree(synthetic_run["cohort"], cohort)
    (cohort / "cohort.json").write_text(json.dumps({"preset": "quick", "seed": 3, "generator_version": "1"}))
    inputs = load_run(run, cohort)
    inputs.sites = inputs.sites[:1]
    paths = write_evaluation(inputs, tmp_path / "eval", source=data_source(cohort))
    central, site = _text(paths["report"]), _text(paths["sites"]["S01"]["report"])
    for text in (central, site):
        assert "Synthetic cohort." in text and "quick" in text
    assert "stopped after round 3 of 8: privacy budget" in central
    assert (tmp_path / "eval_sites" / "S01" / "report.html").exists()


def test_the_evaluation_package_does_not_import_the_cli() -> None:
    code = ("import sys, evaluation.report, evaluation.central_report, evaluation.site_report; "
            "from evaluation.report_html import package_version; "
            "assert not any(m == 'fedresponse' or m.startswith('fedresponse.') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith('fedresponse')]; print(package_version())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    from importlib.metadata import version

    assert result.stdout.strip() == version("fedresponse")


def test_a_handoff_with_a_truncated_aggregate_is_refused(central_only: dict[str, Path], tmp_path: Path) -> None:
    handoff = tmp_path / "handoff"
    shutil.copytree(central_only["handoff"], handoff)
    blob = handoff / "S02" / AGGREGATE_FILE
    blob.write_bytes(blob.read_bytes()[:-8])
    with pytest.raises(EvaluationInputError, match="resend"):
        read_handoff(handoff)


def test_cli_site_steps_then_central_step(synthetic_run: dict[str, Path], evaluated: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    def invoke(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["evaluate", "--no-pdf", *args])
        return result.exit_code, " ".join(result.output.split())

    handoff = tmp_path / "at_the_centre"
    for site in ("S01", "S02"):  # each hospital, on its own machine
        code, output = invoke(str(synthetic_run["run"]), "--site", site, "--out", str(tmp_path / site),
                              "--cohort", str(synthetic_run["cohort"]))
        assert code == 0, output
        (handoff / site).mkdir(parents=True)
        for name in (SUMMARY_FILE, AGGREGATE_FILE):  # what the site sends
            shutil.copy2(tmp_path / site / name, handoff / site / name)
    code, output = invoke("--central", str(handoff), "--out", str(tmp_path / "central"))
    assert code == 0, output
    central = json.loads((tmp_path / "central" / "metrics.json").read_text())
    together = json.loads(evaluated["metrics"].read_text())
    for mode in ("early", "full"):
        assert central["pooled"][mode]["auc"] == together["pooled"][mode]["auc"]
    assert central["pooled"]["n"] == together["pooled"]["n"]
    assert central["pooled"]["dhi_hr"] is None and "interactive rounds" in central["pooled"]["dhi_hr_not_estimable"]
    assert not USUBJID.search((tmp_path / "central" / "report.html").read_text())
    code, output = invoke(str(synthetic_run["run"]), "--site", "S09", "--out", str(tmp_path / "S09"))
    assert code == 2 and "sites found: ['S01', 'S02']" in output and not (tmp_path / "S09").exists()


def test_small_sites_contribute_nothing_and_the_report_says_so(tmp_path: Path) -> None:
    from synthetic_run import make_run

    from evaluation.evaluate import load_run
    from evaluation.report import write_evaluation

    small = make_run(tmp_path, seed=5, n_sites=2, n_per_site=6)  # every class under min_cell_size (5)
    paths = write_evaluation(load_run(small["run"], small["cohort"]), tmp_path / "eval")
    metrics = json.loads(paths["metrics"].read_text())
    assert {(s["site"], s["statistic"]) for s in metrics["pooled"]["suppressed"]} >= {("S01", "full"), ("S02", "full")}
    assert metrics["pooled"]["full"]["auc"] is None and metrics["pooled"]["full"]["auc_not_estimable"]
    text = _text(paths["report"])
    assert "Small cells: these sites contribute nothing" in text and "not estimable:" in text
    assert re.search(r"\bnan\b", text, flags=re.IGNORECASE) is None
    sent = json.loads((tmp_path / "eval_sites" / "S01" / SUMMARY_FILE).read_text())
    assert any(s["statistic"] == "full" for s in sent["aggregate_suppressed"])
