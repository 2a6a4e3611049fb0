"""IBSI-1 compliance runner: digital phantom and CT phantom (configurations A–E) against reference values.

Data: the IBSI data sets in ``<data>/ibsi_1_digital_phantom/nifti``, ``<data>/ibsi_1_ct_radiomics_phantom/nifti``
and ``<data>/reference_values/*.csv`` (``reference value;tolerance;tag``; empty value = no consensus).
The data stay where they are (licence CC BY-NC 3.0); nothing is copied into the project.

A computed value matches when it lies within the tolerance of the reference, either as computed or
rounded to the three significant digits in which IBSI publishes reference values.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radiomics.extractor import FAMILIES, crop_to_roi, family_of, features_from_preprocessed
from radiomics.preprocess import IBSI_CONFIGS, PreprocessedVoi, Spacing, preprocess

log = logging.getLogger(__name__)

CONFIG_FILES: dict[str, str] = {
    "dig": "ibsi_1_dig_phantom.csv",
    "A": "ibsi_1_chest_config_a.csv",
    "B": "ibsi_1_chest_config_b.csv",
    "C": "ibsi_1_chest_config_c.csv",
    "D": "ibsi_1_chest_config_d.csv",
    "E": "ibsi_1_chest_config_e.csv",
}
PHANTOM_DIRS = {"dig": "ibsi_1_digital_phantom", "ct": "ibsi_1_ct_radiomics_phantom"}


def default_data_dir() -> Path:
    """``../shared/data/ibsi`` next to the repository (override with ``FEDRESPONSE_IBSI_DATA``)."""
    env = os.environ.get("FEDRESPONSE_IBSI_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ibsi"


@dataclass(frozen=True)
class ReferenceValue:
    """One row of an IBSI reference table (``value`` is None where IBSI found no consensus)."""

    tag: str
    value: float | None
    tolerance: float | None


@dataclass(frozen=True)
class ComplianceRow:
    """One compared feature: configuration, IBSI tag, our value, the reference, and whether it matches."""

    config: str
    tag: str
    value: float | None
    reference: float | None
    tolerance: float | None
    match: bool | None

    @property
    def family(self) -> str:
        return family_of(self.tag)


def read_reference(path: Path) -> list[ReferenceValue]:
    """Parse an IBSI reference CSV (``;``-separated, header ``reference value;tolerance;tag``)."""
    rows: list[ReferenceValue] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader)
        if [h.strip().lower() for h in header] != ["reference value", "tolerance", "tag"]:
            raise ValueError(f"{path} does not look like an IBSI reference table: header {header!r}")
        for value, tol, tag in reader:
            rows.append(ReferenceValue(tag=tag.strip(), value=float(value) if value.strip() else None,
                                       tolerance=float(tol) if tol.strip() else None))
    return rows


def load_nifti(image_path: Path, mask_path: Path) -> tuple[torch.Tensor, torch.Tensor, Spacing]:
    """Load an image/mask NIfTI pair as ``(Z, Y, X)`` float64 image, bool mask and ``(z, y, x)`` spacing (mm).

    IBSI asks for the intensities to be read at (at least) 32-bit precision and rounded to integers.
    """
    import nibabel as nib
    import numpy as np

    img: Any = nib.load(str(image_path))
    msk: Any = nib.load(str(mask_path))
    image = np.round(np.asarray(img.dataobj, dtype=np.float64)).transpose(2, 1, 0)
    mask = np.round(np.asarray(msk.dataobj, dtype=np.float64)).transpose(2, 1, 0) > 0.5
    zooms = img.header.get_zooms()[:3]
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask)), spacing


def _roi_stats(tag_prefix: str, stage: str, image: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Diagnostic features of one mask (dimensions, bounding box, voxel count, and for intensity masks the
    mean/min/max intensity)."""
    out: dict[str, float] = {}
    names = ("z", "y", "x")
    hits = torch.nonzero(mask)
    for axis, name in enumerate(names):
        out[f"{tag_prefix}_dim_{name}_{stage}_roi"] = float(mask.shape[axis])
        out[f"{tag_prefix}_bb_dim_{name}_{stage}_roi"] = float(hits[:, axis].max() - hits[:, axis].min() + 1)
    out[f"{tag_prefix}_vox_count_{stage}_roi"] = float(mask.sum())
    if tag_prefix == "int_mask":
        values = image[mask]
        out[f"int_mask_mean_int_{stage}_roi"] = float(values.mean())
        out[f"int_mask_min_int_{stage}_roi"] = float(values.min())
        out[f"int_mask_max_int_{stage}_roi"] = float(values.max())
    return out


def _image_stats(stage: str, image: torch.Tensor, spacing: Spacing) -> dict[str, float]:
    out: dict[str, float] = {}
    for axis, name in enumerate(("z", "y", "x")):
        out[f"img_dim_{name}_{stage}_img"] = float(image.shape[axis])
        out[f"vox_dim_{name}_{stage}_img"] = float(spacing[axis])
    out[f"mean_int_{stage}_img"] = float(image.mean())
    out[f"min_int_{stage}_img"] = float(image.min())
    out[f"max_int_{stage}_img"] = float(image.max())
    return out


def diagnostics(image: torch.Tensor, mask: torch.Tensor, spacing: Spacing, pre: PreprocessedVoi
                ) -> dict[str, float]:
    """IBSI diagnostic features of the processing chain (initial, interpolated, re-segmented)."""
    out = _image_stats("init", image, spacing)
    out.update(_image_stats("interp", pre.image[0], pre.spacing))
    for prefix in ("int_mask", "morph_mask"):
        out.update(_roi_stats(prefix, "init", image, mask))
        out.update(_roi_stats(prefix, "interp", pre.image[0], pre.morph_mask[0]))
    out.update(_roi_stats("int_mask", "reseg", pre.image[0], pre.int_mask[0]))
    out.update(_roi_stats("morph_mask", "reseg", pre.image[0], pre.morph_mask[0]))
    return out


def compute_config(config: str, data_dir: Path, device: torch.device | str = "cpu",
                   families: tuple[str, ...] = FAMILIES) -> dict[str, float]:
    """Features of ``families`` (and processing diagnostics) of one IBSI configuration as plain floats."""
    settings = IBSI_CONFIGS[config]
    phantom = PHANTOM_DIRS["dig" if config == "dig" else "ct"]
    base = data_dir / phantom / "nifti"
    image, mask, spacing = load_nifti(base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz")
    image, mask = image.to(device), mask.to(device)
    pre = preprocess(image[None], mask[None], spacing, settings)
    values = diagnostics(image, mask, spacing, pre)
    features = features_from_preprocessed(crop_to_roi(pre), families)
    values.update({tag: float(v[0]) for tag, v in features.items()})
    return values


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def matches(value: float | None, reference: float, tolerance: float) -> bool:
    """Whether ``value`` agrees with ``reference`` within ``tolerance`` (raw or at 3 significant digits)."""
    if value is None or not math.isfinite(value):
        return False
    slack = 1e-9 * max(1.0, abs(reference))
    return abs(value - reference) <= tolerance + slack or abs(_round_sig(value) - reference) <= tolerance + slack


def compare(config: str, values: dict[str, float], references: list[ReferenceValue]) -> list[ComplianceRow]:
    """One :class:`ComplianceRow` per reference tag (``match`` is None where IBSI has no consensus value)."""
    rows = []
    for ref in references:
        value = values.get(ref.tag)
        ok = None if ref.value is None else matches(value, ref.value, ref.tolerance or 0.0)
        rows.append(ComplianceRow(config=config, tag=ref.tag, value=value, reference=ref.value,
                                  tolerance=ref.tolerance, match=ok))
    return rows


def run_compliance(data_dir: Path | None = None, configs: tuple[str, ...] = tuple(CONFIG_FILES),
                   device: torch.device | str = "cpu", families: tuple[str, ...] = FAMILIES) -> list[ComplianceRow]:
    """Compute every configuration and compare with the IBSI reference values.

    Tags of families left out of ``families`` appear with ``value`` None and ``match`` False.

    Raises
    ------
    FileNotFoundError
        When the IBSI data directory is missing (it names the path it looked at).
    """
    data_dir = data_dir or default_data_dir()
    if not (data_dir / "reference_values").is_dir():
        raise FileNotFoundError(f"IBSI data not found at {data_dir.resolve()}: expected reference_values/ and the "
                                f"phantom folders there; pass --data or set FEDRESPONSE_IBSI_DATA")
    rows: list[ComplianceRow] = []
    for config in configs:
        log.info("IBSI configuration %s", config)
        refs = read_reference(data_dir / "reference_values" / CONFIG_FILES[config])
        rows.extend(compare(config, compute_config(config, data_dir, device, families), refs))
    return rows


def summarise(rows: list[ComplianceRow]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(family, config)`` → ``(matched, total)`` over tags that have a reference value."""
    table: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        if row.match is None:
            continue
        matched, total = table.get((row.family, row.config), (0, 0))
        table[(row.family, row.config)] = (matched + int(row.match), total + 1)
    return table


def write_csv(rows: list[ComplianceRow], path: Path) -> None:
    """Write ``config, tag, value, reference, tolerance, match`` atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["config", "tag", "value", "reference", "tolerance", "match"])
            for r in rows:
                writer.writerow([r.config, r.tag, "" if r.value is None else repr(r.value),
                                 "" if r.reference is None else repr(r.reference),
                                 "" if r.tolerance is None else repr(r.tolerance),
                                 "" if r.match is None else str(r.match).lower()])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["ComplianceRow", "ReferenceValue", "compare", "compute_config", "default_data_dir", "load_nifti",
           "matches", "read_reference", "run_compliance", "summarise", "write_csv"]
