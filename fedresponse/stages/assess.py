"""Demo stage ``assess``: response assessment of every site store the ``ingest`` stage wrote.

For each ``ctx.artifacts["store:<SITE>"]`` it runs what ``fedresponse assess STORE --provisional --lock``
runs: both readers assessed independently, agreement statistics, the automated measurement of every mask,
the dynamic-iRECIST reference labels, the analysis populations (``populations.csv``), and a lock audited in the
store's log. The demo has no human
adjudicator: discordant subjects stay ``PENDING`` (unlocked) and are listed in ``adjudication.csv``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, str]:
    """Assess each site store; records ``assessment:<SITE>`` (the output folder) for later stages."""
    from evaluation.protocol import load_protocol
    from evaluation.response.pipeline import run_assessment
    from fedresponse.commands.assess import store_inputs, store_populations
    from privacy.audit import AuditLog

    protocol = load_protocol()
    produced: dict[str, str] = {}
    for key in sorted(k for k in ctx.artifacts if k.startswith("store:")):
        site = key.split(":", 1)[1]
        measurements, events, automated, out, audit = store_inputs(ctx.artifacts[key])
        result = run_assessment(measurements, out, protocol, provisional=True, events=events, audit=AuditLog(audit),
                                who="demo", why="fedresponse demo: BICR double reads assessed", lock=True,
                                automated=automated)
        populations = store_populations(ctx.artifacts[key], out, protocol)
        inter = (result.agreement or {}).get("inter_reader", {})
        icc = f"{inter['sld_icc']:.3f}" if "sld_icc" in inter else "n/a"
        analysed = int((populations["EFFFL"] == "Y").sum())
        ctx.console.print(f"{site}: {result.subjects} subjects, BOR {result.bor_counts}, SLD ICC(2,1) {icc}, "
                          f"{len(result.pending)} pending adjudication, EFFFL {analysed}/{len(populations)}")
        ctx.artifacts[f"assessment:{site}"] = out
        produced[f"response assessment {site}"] = str(out)
    return produced
