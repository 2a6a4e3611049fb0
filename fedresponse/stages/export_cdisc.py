"""Demo stage ``export-cdisc``: the submission package of the demo cohort.

Reads the de-identified site stores of the ``ingest`` stage (``store:<SITE>``) when there are any, else the
synthesized cohort, and writes ``<demo>/cdisc/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, str]:
    """Export SDTM + ADaM (XPT v5), define.xml and the reviewer's guide; record ``cdisc`` for later stages."""
    from evaluation.cdisc.export import export_cdisc

    stores = [ctx.artifacts[k] for k in sorted(ctx.artifacts) if k.startswith("store:")]
    source: list[Path] = stores or [ctx.cohort]
    out = ctx.out / "cdisc"
    paths = export_cdisc(source, out, labels="en")
    ctx.artifacts["cdisc"] = out
    ctx.console.print(f"CDISC package from {'site stores' if stores else 'the cohort'}: "
                      f"{len([p for p in paths.values() if p.suffix == '.xpt'])} XPT v5 files, SDTM and ADaM "
                      "define.xml (Define-XML 2.1), regeneration programs, guide")
    return {"CDISC SDTM/ADaM (XPT v5)": str(out), "define.xml": str(paths["define_sdtm"]),
            "define.xml (ADaM)": str(paths["define_adam"]), "regeneration programs": str(paths["programs"]),
            "reviewer's guide": str(paths["guide"])}
