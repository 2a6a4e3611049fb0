"""Demo stage ``train (federated)``: a short Flower simulation, DP-SGD at each site and CKKS aggregation

(what ``fedresponse train --cohort DIR --keys KEYDIR --out RUN`` runs, with 2 rounds of 1 local epoch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, str]:
    """A short simulated DP+HE run (early and full models) on the demo cohort.

    Uses the featurize stage's ``model_inputs:<SITE>`` artifacts, else the ``model_inputs.pt`` files under
    ``ctx.out``, else featurizes the assessed site stores; writes ``ctx.out/ckks_keys`` and ``ctx.out/federated``
    and records ``run:federated`` (a complete, evaluable run) and ``ckks_keys`` in ``ctx.artifacts``; prints the
    pooled early and full AUC against ``run:centralized`` when recorded.
    """
    from fedresponse.federation import comparison_line, train_federated
    from privacy.ckks import write_key_files

    # the featurize stage's files when it ran; else every assessed site store featurizes itself in place
    inputs = {key.split(":", 1)[1]: Path(path) for key, path in ctx.artifacts.items()
              if key.startswith("model_inputs:")} or None
    keys, run = ctx.out / "ckks_keys", ctx.out / "federated"  # ctx.out/keys holds the PI's re-identification keys
    write_key_files(keys, overwrite=True)
    centralized = ctx.artifacts.get("run:centralized")
    reports = train_federated(ctx.out, keys, run, overrides={"num-server-rounds": 2, "local-epochs": 1,
                                                             "seed": int(ctx.seed)}, inputs=inputs,
                              centralized=Path(centralized) if centralized else None)
    ctx.artifacts["run:federated"] = run
    ctx.artifacts["ckks_keys"] = keys
    last = reports[-1] if reports else None
    summary = ", ".join(f"{r.site} ε={r.epsilon:.2f}" for r in last.ledger) if last else "no rounds"
    out = {"privacy ledger": str(run / "privacy_ledger.csv"), "rounds": str(run / "rounds.jsonl"),
           "site metrics": str(run / "site_metrics.json"), f"after round {last.round if last else 0}": summary}
    if (run / "comparison.json").exists():
        line = comparison_line(json.loads((run / "comparison.json").read_text(encoding="utf-8")))
        ctx.console.print(line)
        out.update({"pooled metrics (encrypted pooling)": str(run / "pooled_metrics.json"),
                    "comparison": str(run / "comparison.json"), "federated vs centralized": line})
    return out
