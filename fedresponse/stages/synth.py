"""Demo stage ``synth``: a fresh ``quick`` cohort of 3 sites × 12 patients."""

from __future__ import annotations

from fedresponse.demo import DemoContext
from synth.cohort import synthesize


def run(ctx: DemoContext) -> dict[str, str]:
    """Synthesize the quick cohort into ``ctx.cohort``."""
    summary = synthesize(ctx.cohort, n_sites=3, patients_per_site=None, seed=ctx.seed, preset_name="quick")
    ctx.console.print(
        f"{summary.patients} patients at {len(summary.sites)} sites, {summary.files} files, "
        f"{summary.responders} responders, oracle early AUC {summary.oracle_auc:.3f}"
    )
    for site in summary.sites:
        ctx.artifacts[f"cohort:{site}"] = ctx.cohort / site
    return {"synthetic cohort": str(ctx.cohort), "generator truth": str(ctx.cohort / "truth")}
