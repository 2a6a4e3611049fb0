"""A site store's model inputs: featurize (graphs, DHI, ``model_inputs.pt``) and pool them for training.

:func:`featurize_store` is the featurize step a site runs before training (format in docs/models.md);
:func:`pooled_cohort` gathers every site's file for centralized training. Both the ``train`` command and
federated simulation (:mod:`fedresponse.federation`) call it, so it lives in neither of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fl_client.centralized import PooledCohort
    from fl_client.progress import ProgressSink
    from fl_client.train import SiteInputs

log = logging.getLogger(__name__)


def featurize_store(
    store_dir: Path, out: Path | None = None, device: str = "auto", seed: int = 0, graphs_file: Path | None = None,
    dhi_file: Path | None = None, durable_day: int = 183, progress: ProgressSink | None = None,
) -> Path:
    """Write a site store's ``model_inputs.pt`` (default ``STORE/model_inputs.pt``).

    Uses the store's assessment (``STORE/assessment/reference.csv``, ``visits.csv``; `fedresponse assess`)
    and the sub-region graphs and DHI table (default ``STORE/radiomics/``; built here when absent, the
    long part: ``progress`` counts ``patients (graphs)`` and ``patients (DHI)`` as they are built).
    """
    import pandas as pd

    from evaluation.populations import POPULATIONS_FILE, read_populations
    from fedresponse.commands.radiomics_graphs import build_site_graphs, site_dhi
    from fl_client.featurize import site_inputs
    from fl_client.store import SiteStore
    from fl_client.train import save_site_inputs
    from models.exceptions import ModelInputError
    from radiomics.graphs import load_graphs

    assessment = store_dir / "assessment"
    if not (assessment / "reference.csv").exists():
        raise ModelInputError(
            f"{store_dir} has no assessment/reference.csv; run `fedresponse assess {store_dir}` first"
        )
    graphs_file = graphs_file or store_dir / "radiomics" / "subregion_graphs.pt"
    dhi_file = dhi_file or store_dir / "radiomics" / "dhi.csv"
    if not graphs_file.exists():
        build_site_graphs(store_dir, graphs_file, device, progress=progress)
    if not dhi_file.exists():
        site_dhi(store_dir, dhi_file, seed=seed, device=device, progress=progress)
    read = {"keep_default_na": False, "na_values": [""]}
    store = SiteStore(store_dir)
    inputs = site_inputs(store.site, load_graphs(graphs_file), store.crf(), pd.read_csv(assessment / "reference.csv",
                         **read), pd.read_csv(assessment / "visits.csv", **read), pd.read_csv(dhi_file), durable_day,
                         populations=read_populations(assessment) if (assessment / POPULATIONS_FILE).exists() else None)
    out = out or store_dir / "model_inputs.pt"
    save_site_inputs(inputs, out)
    log.info("site %s: model inputs of %d patients written to %s", store.site, len(inputs.records), out)
    return out


def featurize_stores(cohort: Path, device: str = "auto", seed: int = 0, durable_day: int = 183,
                     progress: ProgressSink | None = None) -> list[Path]:
    """:func:`featurize_store` for every assessed site store under ``cohort`` (``progress`` counts ``site
    stores`` and, within each, its patients); the ``model_inputs.pt`` paths, one per store."""
    from fl_client.progress import NoProgress

    stores = sorted(p.parent for p in cohort.rglob("store.json") if (p.parent / "assessment").is_dir())
    sink = progress or NoProgress()
    sink.expect("site stores", len(stores))
    paths = []
    for store in stores:
        paths.append(featurize_store(store, device=device, seed=seed, durable_day=durable_day, progress=sink))
        sink.advance("site stores")
    return paths


def pooled_cohort(cohort: Path, device: str = "auto", seed: int = 0, durable_day: int = 183,
                  progress: ProgressSink | None = None) -> PooledCohort:
    """Every site's model inputs under ``cohort``; without any, every assessed store is featurized first
    (:func:`featurize_stores`)."""
    from fl_client.centralized import PooledCohort
    from models.exceptions import ModelInputError

    paths = sorted(cohort.rglob("model_inputs.pt")) or featurize_stores(cohort, device, seed, durable_day, progress)
    if not paths:
        raise ModelInputError(
            f"no model_inputs.pt and no assessed site store under {cohort}; run ingest and assess for each site "
            "first, see docs/models.md"
        )
    sites = [current_inputs(p, device, seed, durable_day) for p in paths]
    first = sites[0]
    for other in sites[1:]:
        if (other.global_names, other.clinical_names) != (first.global_names, first.clinical_names):
            raise ModelInputError(
                f"site {other.site} has different feature columns than site {first.site}; featurize every site "
                "with the same radiomics configuration"
            )
    records = [r for site in sites for r in site.records]
    return PooledCohort(records, first.global_names, first.global_groups, first.clinical_names)


def current_inputs(path: Path, device: str, seed: int, durable_day: int) -> SiteInputs:
    """Load ``path``; a file written by an older featurizer is re-featurized when it sits in its site store
    (graphs and DHI are reused, so this is cheap) and refused otherwise."""
    from fl_client.featurize import stale_columns
    from fl_client.train import load_site_inputs
    from models.exceptions import ModelInputError

    inputs = load_site_inputs(path)
    reason = stale_columns(inputs)
    if reason is None:
        return inputs
    if (path.parent / "store.json").exists() and (path.parent / "assessment").is_dir():
        log.warning("%s; re-featurizing %s", reason, path.parent)
        return load_site_inputs(featurize_store(path.parent, out=path, device=device, seed=seed,
                                                durable_day=durable_day))
    raise ModelInputError(f"{reason}; re-run the featurize step (fedresponse.featurize.featurize_store) "
                          f"for {path}")
