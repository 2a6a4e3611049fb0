"""The chest preset: a whole thorax written slab by slab, seamlessly, with lesions where the trial puts them.

The tests render a shrunken chest (matrix 96, 320 slices): the code path is the preset's, the size is not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

import synth.render as render
from synth.chest import chest_slab, draw_body
from synth.cohort import _jobs, plan_cohort
from synth.phantom import LUNG_HU, Grid
from synth.presets import get_preset


def test_chest_preset_sizes_follow_the_scanner() -> None:
    preset = get_preset("chest")
    assert preset.matrix == 512 and preset.anatomy == "chest"
    for thickness in (0.625, 0.8, 1.0):
        assert 300 <= preset.slices_for(thickness) <= 450 and preset.slices_for(thickness) * thickness >= 280
    assert get_preset("trial").slices_for(0.625) == get_preset("trial").slices


def _small_job(tmp_path: Path) -> render.PatientJob:
    preset = get_preset("chest")
    plan = plan_cohort(1, 1, seed=3, preset=preset)
    job = _jobs(plan, tmp_path, 3, preset)[0]
    return replace(job, matrix=96, slices=320, site_dir=tmp_path / "S01")


def _read(folder: Path) -> np.ndarray:
    files = [pydicom.dcmread(p) for p in folder.iterdir() if p.is_file() and p.name.startswith("IM")]
    files.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array.astype(np.int32) for ds in files])


def test_slabs_join_without_seams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering 16-slice slabs writes exactly the pixels of rendering the series in one piece."""
    job = _small_job(tmp_path / "slabs")
    out = render.render_patient(job)
    monkeypatch.setattr(render, "SLAB", 1000)
    whole = render.render_patient(replace(job, site_dir=tmp_path / "whole" / "S01"))
    assert out.lesions == whole.lesions and len(out.series) == 3
    first = out.series[0]["STUDY_DIR"]
    a, b = _read(tmp_path / "slabs" / str(first)), _read(tmp_path / "whole" / str(first))
    assert a.shape == (320, 96, 96) and np.array_equal(a, b)


def test_anatomy_and_lesions(tmp_path: Path) -> None:
    job = _small_job(tmp_path)
    out = render.render_patient(job)
    assert out.files >= 3 * 320
    volume = _read(tmp_path / str(out.series[0]["STUDY_DIR"])) - 1024  # GE: unsigned, intercept -1024
    assert np.median(volume[:, :4, :4]) < -970 and np.median(volume[:, -4:, -4:]) < -970  # air around the body
    middle = volume[200]  # just below the carina
    assert ((middle > -950) & (middle < -700)).mean() > 0.05  # lung parenchyma in the mid-chest slice
    assert (middle > 500).any()  # bone (spine, ribs)
    primary = [row for row in out.lesions if row["LESIONID"] == "L01"]
    assert len(primary) == 3 and all(not row["TOUCHES_EDGE"] for row in primary)


def test_primary_lies_in_the_left_lung() -> None:
    """The trial's primary (box fractions z 0.42-0.58, y 0.42-0.55, x 0.5-0.62) maps into lung parenchyma."""
    rng = np.random.default_rng(0)
    body = draw_body(rng, 512 * 0.7, 290.0)
    origin, extent = body.target_box
    for fractions in ((0.5, 0.48, 0.56), (0.42, 0.42, 0.5), (0.58, 0.55, 0.62)):
        z, y, x = origin + np.array(fractions) * extent
        point = Grid((1, 1, 1), (1.0, 1.0, 1.0), (x, y, z))
        hu = float(chest_slab(point, np.zeros(3), body)[0, 0, 0])
        assert abs(hu - LUNG_HU) < 120 and x > 0  # aerated lung, patient's left (LPS +x)
