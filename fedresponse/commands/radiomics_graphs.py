"""``fedresponse radiomics graphs`` and ``fedresponse radiomics dhi``: sub-region graphs and the DHI of a site.

Both read a site study store (``docs/store.md``) and follow one lesion per patient: the TARGET lesion
with the largest T0 volume (the same LESIONID at T1 and T2; absent there = vanished). The store keeps
volumes as NIfTI (I, J, K) = (column, row, slice); :func:`load_lesion_series` turns them into the
(Z, Y, X) arrays with (z, y, x) spacing that :mod:`radiomics` works on. Outputs stay at the site.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from fl_client.progress import NoProgress, ProgressSink

if TYPE_CHECKING:
    from radiomics.graphs import TimePointImage

log = logging.getLogger(__name__)

VISITS = ("T0", "T1", "T2")


def choose_lesion(store: Any, usubjid: str) -> str | None:
    """LESIONID of the subject's TARGET lesion with the largest T0 volume (None when there is none)."""
    lesions = store.lesions()
    t0 = lesions[(lesions["USUBJID"] == usubjid) & (lesions["VISIT"] == "T0")]
    meas = store.measurements()
    targets = set(meas.loc[(meas["USUBJID"] == usubjid) & (meas["CATEGORY"] == "TARGET"), "LESIONID"])
    t0 = t0[t0["LESIONID"].isin(targets)] if targets else t0
    if t0.empty:
        return None
    return str(t0.sort_values(["VOLUME_MM3", "LESIONID"], ascending=[False, True]).iloc[0]["LESIONID"])


def load_lesion_series(store: Any, usubjid: str, lesion_id: str) -> list[TimePointImage]:
    """The lesion's scans in visit order as (Z, Y, X) HU volumes, masks, spacing (mm) and study day.

    Parameters
    ----------
    store : fl_client.store.SiteStore
        The site store.
    usubjid, lesion_id : str
        Subject and lesion (``L01``...).
    """
    import numpy as np

    from radiomics.graphs import TimePointImage

    visits = store.visits()
    visits = visits[visits["USUBJID"] == usubjid].set_index("VISIT")
    series = []
    for visit in VISITS:
        if visit not in visits.index:
            continue
        ct, affine = store.ct(usubjid, visit)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # (i, j, k) column lengths in mm
        mask = np.zeros(ct.shape, dtype=bool)
        if visits.loc[visit, "LABEL_PATH"]:
            labels, names = store.labels(usubjid, visit)
            for value, name in names.items():
                if name == lesion_id:
                    mask |= labels == value
        series.append(TimePointImage(
            ct=np.ascontiguousarray(ct.transpose(2, 1, 0)),
            mask=np.ascontiguousarray(mask.transpose(2, 1, 0)),
            spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
            day=float(visits.loc[visit, "ADY"]),
        ))
    return series


def patient_seed(seed: int, usubjid: str, purpose: str) -> int:
    """A stable per-(seed, subject, purpose) integer seed (process-independent, unlike ``hash``)."""
    return zlib.crc32(f"{seed}:{usubjid}:{purpose}".encode()) & 0x7FFFFFFF


def _resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _counted(subjects: list[str], progress: ProgressSink | None, unit: str = "patients") -> Iterator[str]:
    """``subjects``, each counted as a done ``unit`` once the loop body that got it has finished."""
    sink = progress or NoProgress()
    sink.expect(unit, len(subjects))
    for usubjid in subjects:
        yield usubjid
        sink.advance(unit)


def build_site_graphs(store_dir: Path, out: Path, device: str = "auto",
                      progress: ProgressSink | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Write the sub-region graphs of every subject of a site store to ``out`` (``progress`` counts patients).

    Returns
    -------
    n_graphs : int
    skipped : list of (USUBJID, reason)
    """
    from fl_client.store import SiteStore
    from radiomics.exceptions import RadiomicsError
    from radiomics.graphs import build_patient_graph, save_graphs
    from radiomics.subregions import SubregionSpec

    store, spec = SiteStore(store_dir), SubregionSpec()
    built, skipped = [], []
    for usubjid in _counted(sorted(store.visits()["USUBJID"].unique()), progress, "patients (graphs)"):
        lesion = choose_lesion(store, usubjid)
        if lesion is None:
            skipped.append((usubjid, "no annotated lesion at T0"))
            continue
        try:
            series = load_lesion_series(store, usubjid, lesion)
            built.append(build_patient_graph(series, usubjid, spec, _resolve_device(device)))
        except RadiomicsError as err:
            skipped.append((usubjid, str(err)))
    save_graphs(built, out, spec)
    return len(built), skipped


def dhi_definition() -> Any:
    """The pre-specified DHI (:class:`radiomics.dhi.DhiDefinition`) of ``configs/study.yaml`` ``heterogeneity``."""
    from evaluation.protocol import load_protocol
    from radiomics.dhi import DhiDefinition

    block = load_protocol().heterogeneity.dhi_components
    return DhiDefinition.from_mapping({name: c.model_dump() for name, c in block.items()})


def site_dhi(store_dir: Path, out: Path, seed: int = 0, device: str = "auto",
             progress: ProgressSink | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Write the DHI of every subject and interval of a site store to ``out`` (CSV, atomically).

    Columns: :data:`radiomics.dhi.DHI_COLUMNS` (``USUBJID, LESIONID, FROM, TO, DAYS, ..., DHI, STATUS``).
    Returns the number of rows and the skipped subjects with the reason.
    """
    import pandas as pd
    import torch

    from evaluation.atomic import write_text_atomic
    from fl_client.store import SiteStore
    from radiomics.dhi import DHI_COLUMNS, dhi_intervals, habitat_states, interval_rows
    from radiomics.exceptions import RadiomicsError

    store, rows, skipped, definition = SiteStore(store_dir), [], [], dhi_definition()
    for usubjid in _counted(sorted(store.visits()["USUBJID"].unique()), progress, "patients (DHI)"):
        lesion = choose_lesion(store, usubjid)
        if lesion is None:
            skipped.append((usubjid, "no annotated lesion at T0"))
            continue
        gen = torch.Generator().manual_seed(patient_seed(seed, usubjid, "habitats"))
        try:
            series = load_lesion_series(store, usubjid, lesion)
            states = habitat_states([(s.ct, s.mask, s.day) for s in series], gen, device=_resolve_device(device))
        except RadiomicsError as err:
            skipped.append((usubjid, str(err)))
            continue
        visits = VISITS[: len(states)]
        rows += [{"USUBJID": usubjid, "LESIONID": lesion, **row}
                 for row in interval_rows(states, dhi_intervals(states, definition), visits)]
    table = pd.DataFrame(rows, columns=list(DHI_COLUMNS))
    write_text_atomic(out, lambda stream: table.to_csv(stream, index=False), newline="")
    return len(rows), skipped


def graphs(
    store_dir: Path = typer.Argument(..., help="The site store (output of `fedresponse ingest`)."),
    out: Path = typer.Option(..., "--out", help="Graph file to write (torch.save, read by radiomics.graphs)."),
    device: str = typer.Option("auto", "--device", help="torch device: auto, cpu or cuda."),
) -> None:
    """Build every patient's sub-region graph over T0/T1/T2 and write them to one file."""
    from fedresponse.progress import progress_bars

    console = Console()
    with progress_bars("sub-region graphs") as sink:
        n, skipped = build_site_graphs(store_dir, out, device, progress=sink)
    console.print(f"wrote {n} sub-region graphs to [cyan]{out}[/]")
    for usubjid, why in skipped:
        console.print(f"[yellow]skipped[/] {usubjid}: {why}")


def dhi(
    store_dir: Path = typer.Argument(..., help="The site store (output of `fedresponse ingest`)."),
    out: Path = typer.Option(..., "--out", help="CSV to write: one row per patient and interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the habitat k-means (per patient: seed, USUBJID)."),
    device: str = typer.Option("auto", "--device", help="torch device: auto, cpu or cuda."),
) -> None:
    """Dynamic Heterogeneity Index per patient and interval (docs/dhi.md)."""
    from fedresponse.progress import progress_bars

    console = Console()
    with progress_bars("DHI") as sink:
        n, skipped = site_dhi(store_dir, out, seed, device, progress=sink)
    console.print(f"wrote {n} DHI intervals to [cyan]{out}[/]")
    for usubjid, why in skipped:
        console.print(f"[yellow]skipped[/] {usubjid}: {why}")


def add_to(radiomics_app: typer.Typer) -> None:
    """Attach ``graphs`` and ``dhi`` to the ``fedresponse radiomics`` group."""
    radiomics_app.command("graphs")(graphs)
    radiomics_app.command("dhi")(dhi)
