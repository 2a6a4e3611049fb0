"""Demo stage ``ingest``: every site of the synthesized cohort → its site study store."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext

#: Demo only: a real site's passphrase is chosen and kept by the PI (docs/site-setup.md).
DEMO_PASSPHRASE = "demo-only-passphrase-not-for-real-sites"


def run(ctx: DemoContext) -> dict[str, str]:
    """Ingest ``ctx.cohort/<SITE>`` into ``ctx.out/stores/<SITE>``; records ``store:<SITE>`` artifacts."""
    from fl_client.ingest.pipeline import IngestConfig, ingest_site

    produced: dict[str, str] = {}
    sites = sorted(p.name for p in ctx.cohort.iterdir() if p.is_dir() and re.fullmatch(r"S\d{2}", p.name))
    for site in sites:
        store = ctx.out / "stores" / site
        config = IngestConfig(site=site, passphrase=DEMO_PASSPHRASE, who="demo", why="fedresponse demo",
                              key_file=ctx.out / "keys" / f"{site}.reid.enc")
        summary = ingest_site(ctx.cohort / site, store, config)
        ctx.console.print(f"{site}: {summary.files} files, {summary.visits} visits, {summary.queries} CRF queries, "
                          f"{summary.eligible}/{summary.subjects} eligible, {summary.slices / summary.seconds:.0f} "
                          "slices/s")
        ctx.artifacts[f"store:{site}"] = store
        produced[f"site store {site}"] = str(store)
        produced[f"re-identification key {site} (encrypted)"] = str(config.key_file)
    return produced
