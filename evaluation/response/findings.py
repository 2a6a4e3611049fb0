"""What one reader saw at one visit, reduced to what the response criteria need.

The per-visit summary (:class:`VisitFindings`) is built once from the measurement rows and shared by
the RECIST 1.1 and iRECIST rules, so both read the lesions the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.protocol import Recist

# Statuses that mean "an unequivocal new lesion is there" for a NEW row.
_NEW_PRESENT = frozenset({"PRESENT", "INCREASED", "UNEQUIVOCAL_PROGRESSION"})
_PRECISION = 6  # decimals kept in sums and percentages; removes binary floating-point noise at thresholds


def rounded(value: float) -> float:
    """Round to the precision used for threshold comparisons (mm and % to 1e-6)."""
    return round(float(value), _PRECISION)


@dataclass(frozen=True)
class NewLesion:
    """A new lesion at one visit: ``state`` is ``Y`` (unequivocal), ``EQUIVOCAL``, ``ABSENT`` or ``NE``."""

    lesion_id: str
    organ: str
    node: bool
    state: str
    diam_mm: float
    status: str


@dataclass(frozen=True)
class VisitFindings:
    """One visit of one subject as the response criteria see it.

    Attributes
    ----------
    visit, ady : str, int
        Visit name and study day of the scan.
    sld_mm : float | None
        Sum of the measured target diameters (non-nodal long axis + nodal short axis), mm; ``None``
        when the subject has no targets or none was measured.
    targets_complete : bool
        Every baseline target was measured at this visit.
    nonnodal_all_zero, nodes_all_normal : bool
        CR conditions: non-nodal targets gone, every nodal target below the normal size.
    nonnodal_any_present : bool
        A measured non-nodal target is larger than 0 mm (reappearance after CR).
    nontarget : str
        ``NA`` (no non-target lesions), ``CR``, ``NON-CR/NON-PD``, ``PD`` or ``NE``.
    nontarget_increased : frozenset[str]
        Non-target lesions marked ``INCREASED`` (growth short of unequivocal progression).
    nontarget_unequivocal : frozenset[str]
        Non-target lesions marked ``UNEQUIVOCAL_PROGRESSION``.
    new_lesions : tuple[NewLesion, ...]
        NEW rows of this visit.
    """

    visit: str
    ady: int
    sld_mm: float | None
    targets_complete: bool
    has_targets: bool
    nonnodal_all_zero: bool
    nodes_all_normal: bool
    nonnodal_any_present: bool
    nontarget: str
    nontarget_increased: frozenset[str] = frozenset()
    nontarget_unequivocal: frozenset[str] = frozenset()
    new_lesions: tuple[NewLesion, ...] = field(default_factory=tuple)

    @property
    def new_present(self) -> frozenset[str]:
        """Ids of unequivocal new lesions present at this visit."""
        return frozenset(n.lesion_id for n in self.new_lesions if n.state == "Y")

    @property
    def newles(self) -> str:
        """``Y`` (unequivocal new lesion), ``EQUIVOCAL`` or ``N``."""
        states = {n.state for n in self.new_lesions}
        return "Y" if "Y" in states else "EQUIVOCAL" if "EQUIVOCAL" in states else "N"


def _target_diameter(row: Row) -> float:
    """A target's diameter in mm, ``nan`` when not measured (``ABSENT`` without a value counts as 0)."""
    if row["STATUS"] == "NE":
        return float("nan")
    if np.isnan(row["DIAM_MM"]):
        return 0.0 if row["STATUS"] == "ABSENT" else float("nan")
    return float(row["DIAM_MM"])


def _nontarget_state(row: Row | None, node_normal_below_mm: float) -> str:
    if row is None:
        return "NE"
    status = str(row["STATUS"])
    if status:
        return status
    diam = row["DIAM_MM"]
    if np.isnan(diam):
        return "NE"
    if row["NODE"] == "Y":
        return "ABSENT" if diam < node_normal_below_mm else "PRESENT"
    return "ABSENT" if diam == 0 else "PRESENT"


def _nontarget_category(states: dict[str, str]) -> str:
    if not states:
        return "NA"
    values = set(states.values())
    if "UNEQUIVOCAL_PROGRESSION" in values:
        return "PD"
    if "NE" in values:
        return "NE"
    if values == {"ABSENT"}:
        return "CR"
    return "NON-CR/NON-PD"


def _new_state(row: Row) -> str:
    status = str(row["STATUS"])
    if status in _NEW_PRESENT:
        return "Y"
    if status in {"EQUIVOCAL", "ABSENT", "NE"}:
        return status
    diam = row["DIAM_MM"]
    if np.isnan(diam):
        return "NE"
    return "Y" if diam > 0 else "ABSENT"


Row = Mapping[str, Any]


def visit_findings(
    rows: Sequence[Row], visit: str, ady: int, baseline: Sequence[Row], rules: Recist
) -> VisitFindings:
    """Summarise one visit's rows (one subject, one reader) against the baseline lesions.

    Parameters
    ----------
    rows : list of mapping
        Normalised measurement rows of this visit (``DataFrame.to_dict("records")``).
    baseline : list of mapping
        Normalised rows of the subject's baseline visit (fixes the target and non-target sets).
    rules : Recist
        Protocol RECIST numbers (the normal-node size).
    """
    by_id = {r["LESIONID"]: r for r in rows}
    targets = [r for r in baseline if r["CATEGORY"] == "TARGET"]
    values = np.asarray([float("nan") if r["LESIONID"] not in by_id else _target_diameter(by_id[r["LESIONID"]])
                         for r in targets], dtype=float)
    node_mask = np.asarray([r["NODE"] == "Y" for r in targets], dtype=bool)
    measured = ~np.isnan(values)
    sld = rounded(values[measured].sum()) if measured.any() else None
    nt_states = {r["LESIONID"]: _nontarget_state(by_id.get(r["LESIONID"]), rules.node_normal_below_mm)
                 for r in baseline if r["CATEGORY"] == "NONTARGET"}
    new = tuple(
        NewLesion(r["LESIONID"], r["ORGAN"], r["NODE"] == "Y", _new_state(r), float(r["DIAM_MM"]), str(r["STATUS"]))
        for r in rows if r["CATEGORY"] == "NEW"
    )
    return VisitFindings(
        visit=visit,
        ady=ady,
        sld_mm=sld,
        targets_complete=bool(measured.all()) and len(values) > 0,
        has_targets=len(values) > 0,
        nonnodal_all_zero=bool(np.all(values[~node_mask] == 0)),
        nodes_all_normal=bool(np.all(values[node_mask] < rules.node_normal_below_mm)),
        nonnodal_any_present=bool(np.any(values[~node_mask & measured] > 0)),
        nontarget=_nontarget_category(nt_states),
        nontarget_increased=frozenset(k for k, v in nt_states.items() if v == "INCREASED"),
        nontarget_unequivocal=frozenset(k for k, v in nt_states.items() if v == "UNEQUIVOCAL_PROGRESSION"),
        new_lesions=new,
    )


def confirm_equivocal_new_lesions(findings: list[VisitFindings]) -> list[VisitFindings]:
    """Date new lesions to their first appearance once a later scan shows them unequivocally.

    RECIST 1.1 §4.3.2 (Eisenhauer 2009): "If repeat scans confirm there is definitely a new lesion,
    then progression should be declared using the date of the initial scan." This is a retrospective
    read: an ``EQUIVOCAL`` new lesion later seen as unequivocal (same ``LESIONID``) counts as
    unequivocal from its first equivocal appearance; one never confirmed stays equivocal.
    """
    confirmed: set[str] = set()
    for f in findings:
        confirmed |= f.new_present
    out = []
    for f in findings:
        lesions = tuple(
            NewLesion(n.lesion_id, n.organ, n.node, "Y", n.diam_mm, n.status)
            if n.state == "EQUIVOCAL" and n.lesion_id in confirmed
            else n
            for n in f.new_lesions
        )
        out.append(VisitFindings(**{**f.__dict__, "new_lesions": lesions}))
    return out
