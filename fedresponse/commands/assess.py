"""``fedresponse assess``: RECIST 1.1 / iRECIST response assessment, double reads, adjudication, lock.

Two forms:

- ``fedresponse assess --measurements reads.csv --out DIR`` on a lesion-measurement table;
- ``fedresponse assess STORE`` on a site store written by ``fedresponse ingest`` (reads
  ``measurements.parquet`` and ``crf.parquet``, writes ``STORE/assessment/``, audits to ``STORE/audit.jsonl``)
  and derives the site's analysis populations into ``STORE/assessment/populations.csv``
  (:mod:`evaluation.populations`, docs/store.md) and its ADaM rows into ``STORE/assessment/adam/``.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"USUBJID": str, "VISIT": str, "LESIONID": str, "STATUS": str},
                       keep_default_na=False, na_values=[""])


def _automated(site: Any, measurements: Any) -> Any:
    """Automated RECIST measures of every annotated lesion of the store (evaluation.measure)."""
    import nibabel as nib
    import pandas as pd
    from rich.progress import track

    from evaluation.measure import AUTO_COLUMNS, measure_labels, measurement_rows

    node_rows = measurements[measurements["NODE"].astype(str).str.upper() == "Y"]
    nodes = set(zip(node_rows["USUBJID"], node_rows["LESIONID"], strict=True))
    rows: list[dict[str, Any]] = []
    visits = site.visits()
    for _, visit in track(list(visits[visits["LABEL_PATH"].astype(bool)].iterrows()), description="measuring masks"):
        labels, names = site.labels(visit["USUBJID"], visit["VISIT"])
        image: Any = nib.load(site.path / str(visit["LABEL_PATH"]))  # labels share the CT affine (docs/store.md)
        affine = image.affine
        subject_nodes = {lid for lid in names.values() if (visit["USUBJID"], lid) in nodes}
        results = measure_labels(labels, affine, names, subject_nodes)
        rows += measurement_rows(visit["USUBJID"], visit["VISIT"], results, subject_nodes)
    return pd.DataFrame(rows, columns=list(AUTO_COLUMNS))


def store_inputs(store: Path, measure: bool = True) -> tuple[Any, Any, Any, Path, Path]:
    """(measurements, events, automated, output folder, audit log) of a site store, through its read API.

    Shared by the command and the demo stage (both are entry points; :mod:`evaluation` itself never reads
    the store, ARCHITECTURE import rules).
    """
    from evaluation.response.reference import events_from_crf
    from fl_client.store import SiteStore

    site = SiteStore(store)
    crf = site.crf()
    events = events_from_crf(crf) if "FIRST_DOSE_DATE" in crf.columns else None
    measurements = site.measurements()
    automated = _automated(site, measurements) if measure else None
    return measurements, events, automated, store / "assessment", store / "audit.jsonl"


def store_populations(store: Path, folder: Path, protocol: Any) -> Any:
    """Derive the site's analysis populations (:mod:`evaluation.populations`) from the store's enrolment,
    eligibility, query listing and protocol scans and the assessment's reference labels; write
    ``folder/populations.csv`` atomically and return the table."""
    import pandas as pd

    from evaluation.populations import POPULATIONS_FILE, derive_populations
    from evaluation.response.engine import write_csv_atomic
    from fl_client.store import SiteStore

    site = SiteStore(store)
    subjects, crf = site.subjects(), site.crf()
    enrolled = [*subjects["USUBJID"].astype(str), *crf["USUBJID"].astype(str)]
    scans = site.visits()
    scans = scans[scans["VISIT"].isin(protocol.visits) & scans["CT_PATH"].astype(str).ne("")]
    reference_path = folder / "reference.csv"
    reference = pd.read_csv(reference_path, dtype=str, keep_default_na=False) if reference_path.exists() else None
    site_id = str(subjects["SITEID"].iloc[0]) if len(subjects) else store.name
    table = derive_populations(site_id, enrolled, site.eligibility(), site.queries(), scans, reference,
                               protocol.populations)
    write_csv_atomic(table, folder / POPULATIONS_FILE)
    return table


def store_adam(store: Path, folder: Path, protocol: Any, populations: Any) -> Path:
    """The site's own ADaM rows — ADSL, ADRS, ADTTE of its subjects (:func:`evaluation.cdisc.adam.make_adam` on
    its SDTM, with its population flags) — as ``folder/adam/{adsl,adrs,adtte}.csv``: the endpoints derived once,
    by the code the submission package uses; they stay at the site."""
    from evaluation.cdisc.adam import make_adam
    from evaluation.cdisc.export import read_sources
    from evaluation.cdisc.sdtm import make_sdtm
    from evaluation.response.engine import write_csv_atomic

    adam = make_adam(make_sdtm(read_sources(store), protocol), protocol, populations)
    out = folder / "adam"
    out.mkdir(exist_ok=True)
    for name, frame in adam.items():
        write_csv_atomic(frame, out / f"{name}.csv")
    return out


def _summary(console: Console, run: Any, populations: Any = None) -> None:
    table = Table(title=f"Response assessment → {run.out}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("subjects", str(run.subjects))
    table.add_row("readers", ", ".join(run.readers))
    for bor, count in sorted(run.bor_counts.items()):
        table.add_row(f"BOR {bor}", str(count))
    if run.agreement:
        inter = run.agreement.get("inter_reader", {})
        if "sld_icc" in inter:
            low, high = inter["sld_icc_ci"]
            table.add_row("SLD ICC(2,1) [95% CI]", f"{inter['sld_icc']:.3f} [{low:.3f}, {high:.3f}]")
        if "visit_kappa" in inter:
            table.add_row("visit-response kappa", f"{inter['visit_kappa']:.3f}")
        table.add_row("adjudication rate", f"{run.agreement['adjudication_rate']:.1%}")
    if populations is not None:
        for flag in ("ITTFL", "ELIGFL", "EARLYFL", "EFFFL", "PFSFL"):
            table.add_row(f"population {flag}", str(int((populations[flag] == "Y").sum())))
    table.add_row("pending adjudication", str(len(run.pending)))
    table.add_row("locked", "yes" if run.locked else "no")
    if run.changes:
        table.add_row("audited changes", str(run.changes))
    console.print(table)


def assess(
    store: Path | None = typer.Argument(None, help="Site store from `fedresponse ingest`."),
    measurements: Path | None = typer.Option(None, "--measurements", help="Lesion-measurement table (.csv/.parquet)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: STORE/assessment)."),
    decisions: Path | None = typer.Option(None, "--decisions",
                                          help="Decisions CSV: USUBJID, CHOSEN_READER, ADJUDICATOR, REASON."),
    provisional: bool = typer.Option(False, "--provisional",
                                     help="Write although discordant subjects lack a decision (left PENDING)."),
    allow_nontarget_only: bool = typer.Option(False, "--allow-nontarget-only",
                                              help="Assess subjects without baseline targets (RECIST Table 2)."),
    lock: bool = typer.Option(False, "--lock", help="Lock the assessment after writing it (needs an audit log)."),
    audit_log: Path | None = typer.Option(None, "--audit-log", help="Audit log (default: <folder>/audit.jsonl)."),
    who: str = typer.Option("", "--who", help="Who runs the assessment (default: the login name)."),
    reason: str = typer.Option("", "--reason", help="Why: required to change a locked assessment."),
    protocol_file: Path | None = typer.Option(None, "--protocol", help="Protocol YAML (default: configs/study.yaml)."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="STORE form: measure every lesion mask too."),
) -> None:
    """RECIST 1.1 / iRECIST assessment, reader agreement, adjudication, dynamic-iRECIST reference labels."""
    from evaluation.exceptions import CdiscExportError, EvaluationError
    from evaluation.protocol import load_protocol
    from evaluation.response.pipeline import run_assessment
    from fl_client.exceptions import FlClientError
    from privacy.audit import AuditLog, AuditLogError

    console = Console()
    if (store is None) == (measurements is None):
        console.print("[bold red]assess:[/] give either a STORE or --measurements IN.csv (not both)")
        raise typer.Exit(code=2)
    populations = None
    try:
        events = automated = None
        if store is not None:
            table, events, automated, default_out, default_audit = store_inputs(store, measure)
        else:
            assert measurements is not None
            if out is None:
                console.print("[bold red]assess:[/] --measurements needs --out DIR")
                raise typer.Exit(code=2)
            table, default_out, default_audit = _read_table(measurements), out, out / "audit.jsonl"
        folder = out or default_out
        run = run_assessment(
            table, folder, load_protocol(protocol_file),
            decisions=_read_table(decisions) if decisions else None, provisional=provisional, events=events,
            allow_nontarget_only=allow_nontarget_only, audit=AuditLog(audit_log or default_audit),
            who=who or getpass.getuser(), why=reason or None, lock=lock, automated=automated,
        )
        if store is not None:
            protocol = load_protocol(protocol_file)
            populations = store_populations(store, folder, protocol)
            try:
                store_adam(store, folder, protocol, populations)
            except CdiscExportError as exc:  # the assessment stands; the site's ADaM rows need a complete CRF
                console.print(f"[yellow]assess: no ADaM rows in {folder / 'adam'}:[/] {exc}")
    except (EvaluationError, AuditLogError, FlClientError, FileNotFoundError) as exc:
        console.print(f"[bold red]assess failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    _summary(console, run, populations)


def register(app: typer.Typer) -> None:
    app.command("assess")(assess)
