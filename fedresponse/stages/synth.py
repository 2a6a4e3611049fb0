"""Demo stage ``synth``: a fresh ``quick``-preset cohort of 3 sites × 24 patients.

Twice the preset's 12 per site: with the protocol's small-cell rule (``statistics.min_cell_size``) a site
whose analysed responders or non-responders number under 5 contributes nothing to a pooled statistic, and at
12 enrolled (8–9 analysed) per site every pooled AUC of the demo was withheld as not estimable.
"""

from __future__ import annotations

from fedresponse.demo import DemoContext
from synth.cohort import synthesize

#: enrolled patients per demo site (see the module docstring)
DEMO_PATIENTS_PER_SITE = 24


def run(ctx: DemoContext) -> dict[str, str]:
    """Synthesize the quick cohort into ``ctx.cohort``."""
    summary = synthesize(ctx.cohort, n_sites=3, patients_per_site=DEMO_PATIENTS_PER_SITE, seed=ctx.seed,
                         preset_name="quick")
    ctx.console.print(
        f"{summary.patients} patients at {len(summary.sites)} sites, {summary.files} files, "
        f"{summary.responders} responders, oracle early AUC {summary.oracle_auc:.3f}"
    )
    for site in summary.sites:
        ctx.artifacts[f"cohort:{site}"] = ctx.cohort / site
    return {"synthetic cohort": str(ctx.cohort), "generator truth": str(ctx.cohort / "truth")}
