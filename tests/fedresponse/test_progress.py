"""The featurize step's progress: every patient is counted once per pass, under its own bar."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from fedresponse.commands.radiomics_graphs import _counted
from fedresponse.progress import RichProgress


def test_each_pass_counts_its_patients_under_its_own_bar() -> None:
    progress = Progress(console=Console(file=None, force_terminal=False, quiet=True))
    sink = RichProgress(progress, "featurize")
    subjects = ["S01-0001", "S01-0002", "S01-0003"]
    seen = []
    for usubjid in _counted(subjects, sink, "patients (graphs)"):
        done = progress.tasks[sink.tasks["patients (graphs)"]].completed
        seen.append((usubjid, done))  # a patient counts as done only once its body has run
    for _ in _counted(subjects, sink, "patients (DHI)"):
        pass
    assert seen == [("S01-0001", 0), ("S01-0002", 1), ("S01-0003", 2)]
    by_unit = {t.description: (t.completed, t.total) for t in progress.tasks}
    assert by_unit == {"featurize: patients (graphs)": (3, 3), "featurize: patients (DHI)": (3, 3)}


def test_an_interrupted_pass_leaves_the_patient_uncounted() -> None:
    progress = Progress(console=Console(quiet=True))
    sink = RichProgress(progress, "featurize")
    counted = _counted(["A", "B"], sink, "patients (DHI)")
    next(counted)
    counted.close()  # the loop body raised before finishing patient A
    task = progress.tasks[sink.tasks["patients (DHI)"]]
    assert (task.completed, task.total) == (0, 2)
