"""Demo stage ``subregion-graphs``: per site store, the sub-region graphs and the DHI table

(what ``fedresponse radiomics graphs STORE`` and ``fedresponse radiomics dhi STORE`` write).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, str]:
    """Per site store, the graphs and the DHI table.

    Reads the ``store:<SITE>`` artifacts of the ingest stage; records ``graphs:<SITE>`` and ``dhi:<SITE>``.
    """
    from fedresponse.commands.radiomics_graphs import build_site_graphs, site_dhi

    produced: dict[str, str] = {}
    stores = sorted((k.split(":", 1)[1], v) for k, v in ctx.artifacts.items() if k.startswith("store:"))
    for site, store in stores:
        graph_file = ctx.out / "radiomics" / site / "subregion_graphs.pt"
        dhi_file = ctx.out / "radiomics" / site / "dhi.csv"
        n_graphs, skipped = build_site_graphs(store, graph_file)
        n_rows, _ = site_dhi(store, dhi_file, seed=ctx.seed)
        ctx.console.print(f"{site}: {n_graphs} sub-region graphs, {n_rows} DHI intervals, {len(skipped)} skipped")
        for usubjid, why in skipped:
            ctx.console.print(f"  [yellow]skipped[/] {usubjid}: {why}")
        ctx.artifacts[f"graphs:{site}"] = graph_file
        ctx.artifacts[f"dhi:{site}"] = dhi_file
        produced[f"sub-region graphs {site}"] = str(graph_file)
        produced[f"DHI per interval {site}"] = str(dhi_file)
    return produced
