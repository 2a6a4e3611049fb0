"""The centralized run's console table marks the product model (``metrics.json`` ``model``)."""

from __future__ import annotations

from rich.console import Console

from fedresponse.commands.train import print_metrics

ROW = {"auc": 0.75, "auc_ci": [0.6, 0.9], "sensitivity": 0.7, "specificity": 0.6, "n": 40}


def test_the_product_model_is_marked_and_the_others_are_not() -> None:
    console = Console(record=True, width=160)
    print_metrics(console, {"model": "wide", "early": {"wide": ROW, "fusion": ROW, "cutoff": 0.4}})
    text = console.export_text()
    assert "wide (product)" in text
    assert "fusion (product)" not in text and "fusion" in text
