"""Radiomics throughput: VOIs per second for the full IBSI feature set, ours vs PyRadiomics, same run.

Two workloads on the IBSI CT phantom (``../shared/data/ibsi``):

1. the GTV as one VOI under IBSI configuration C (2 mm isotropic trilinear, range [-1000, 400] HU,
   fixed bin size 25 HU, 3D texture);
2. batches of sub-region VOIs: the GTV split into 16 sub-regions (8 octants around its centroid × inner and
   outer shell), on the native grid, range [-1000, 400] HU, bin size 25 HU, 3D texture; ours computes the
   whole batch in one call, PyRadiomics one VOI per call.

PyRadiomics is imported into this same process when ``--pyradiomics-site`` points at a site-packages
folder holding it (it is never a project dependency: PyRadiomics 3.0.1 only builds with
``--no-build-isolation`` on Python 3.11). Its top-level package is also called ``radiomics``, so it is
imported under a swapped ``sys.modules`` and both live side by side afterwards.

Usage::

    python benchmarks/bench_radiomics.py [--device cpu|cuda] [--repeats 3] [--pyradiomics-site DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radiomics.extractor import extract_features  # noqa: E402
from radiomics.ibsi import default_data_dir, load_nifti  # noqa: E402
from radiomics.preprocess import IBSI_CONFIGS, IbsiSettings  # noqa: E402

NON_TEXTURE = ("morph", "loc", "stat", "ih", "ivh")
SUBREGION_SETTINGS = IbsiSettings(name="sub", texture_dims=("3D",), reseg_range=(-1000.0, 400.0),
                                  discretisation="fbs", bin_width=25.0, n_bins=None, ivh=("fbs", 2.5))


def import_pyradiomics(site: Path) -> Any | None:
    """Import PyRadiomics' ``featureextractor`` from ``site`` without clobbering our ``radiomics`` package."""
    ours = {k: v for k, v in sys.modules.items() if k == "radiomics" or k.startswith("radiomics.")}
    for key in ours:
        del sys.modules[key]
    sys.path.insert(0, str(site))
    try:
        import radiomics  # PyRadiomics' package of the same name

        radiomics.setVerbosity(logging.ERROR)
        from radiomics import featureextractor

        featureextractor.getFeatureClasses()  # import every feature module now, while the swap holds
        featureextractor.getImageTypes()
        theirs = {k: v for k, v in sys.modules.items() if k == "radiomics" or k.startswith("radiomics.")}
        return featureextractor
    except ImportError as err:
        print(f"PyRadiomics not importable from {site}: {err}")
        theirs = {}
        return None
    finally:
        for key in theirs:
            sys.modules.pop(key, None)
        sys.path.remove(str(site))
        sys.modules.update(ours)


def pyradiomics_extractor(featureextractor: Any, resample: bool) -> Any:
    settings: dict[str, Any] = {"binWidth": 25, "resegmentRange": [-1000, 400], "interpolator": "sitkLinear",
                                "force2D": False, "label": 1}
    if resample:
        settings["resampledPixelSpacing"] = [2.0, 2.0, 2.0]
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.enableAllFeatures()
    return extractor


def to_sitk(array: np.ndarray, spacing: tuple[float, float, float]) -> Any:
    import SimpleITK  # comes with PyRadiomics (already in sys.modules once it is imported)

    image = SimpleITK.GetImageFromArray(array)  # (z, y, x) array → (x, y, z) image
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    return image


def subregions(mask: torch.Tensor, spacing: tuple[float, float, float]) -> torch.Tensor:
    """``(16, Z, Y, X)`` masks: octants around the centroid × inner/outer half of the normalised radius."""
    idx = torch.nonzero(mask).double() * torch.tensor(spacing, dtype=torch.float64)
    centre = idx.mean(0)
    zz, yy, xx = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) * s for n, s in zip(mask.shape, spacing,
                                                                                            strict=True)],
                                indexing="ij")
    d = torch.stack([zz - centre[0], yy - centre[1], xx - centre[2]])
    radius = d.norm(dim=0)
    r_max = radius[mask].max()
    octant = (d[0] > 0).long() * 4 + (d[1] > 0).long() * 2 + (d[2] > 0).long()
    shell = (radius > 0.6 * r_max).long()
    label = octant * 2 + shell
    return torch.stack([mask & (label == k) for k in range(16)])


CPU_SECONDS: list[float] = []  # process CPU time of the last `timed` call (all threads), beside wall time


def timed(fn: Any, repeats: int) -> float:
    """Median wall-clock seconds of ``fn`` after one warm-up call; its median CPU seconds go to CPU_SECONDS.

    On a shared machine wall time includes waiting for the cores; CPU time does not, so both are shown.
    """
    fn()  # warm-up (allocations, lazy imports, CUDA kernels)
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    CPU_SECONDS[:] = [statistics.median(cpus)]
    return statistics.median(walls)


def crop(image: torch.Tensor, mask: torch.Tensor, margin: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    hits = torch.nonzero(mask)
    lo = (hits.min(0).values - margin).clamp(min=0)
    hi = hits.max(0).values + margin + 1
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return image[sl], mask[sl]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="sub-region batch sizes")
    parser.add_argument("--pyradiomics-site", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = default_data_dir() / "ibsi_1_ct_radiomics_phantom" / "nifti"
    image, mask, spacing = load_nifti(base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz")
    device = torch.device(args.device)
    import os

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    figures: dict[str, float] = {}

    # 1. the phantom GTV, configuration C
    gtv_img, gtv_mask = image.to(device), mask.to(device)
    t_ours = timed(lambda: extract_features(gtv_img, gtv_mask, spacing, IBSI_CONFIGS["C"]), args.repeats)
    c_ours = CPU_SECONDS[0]
    n_feats = len(extract_features(gtv_img, gtv_mask, spacing, IBSI_CONFIGS["C"]))
    t_first = timed(lambda: extract_features(gtv_img, gtv_mask, spacing, IBSI_CONFIGS["C"], families=NON_TEXTURE),
                    args.repeats)
    c_first = CPU_SECONDS[0]
    figures["gtv_ours_s_per_voi"] = t_ours
    figures["gtv_ours_cpu_s_per_voi"] = c_ours
    figures["gtv_ours_non_texture_cpu_s_per_voi"] = c_first
    figures["gtv_ours_non_texture_s_per_voi"] = t_first
    print(f"[GTV, config C] ours: {t_ours:.3f} s/VOI ({n_feats} features); of which preprocessing + morphology, "
          f"local intensity, statistics, IH, IVH: {t_first:.3f} s, texture: {t_ours - t_first:.3f} s "
          f"(CPU: {c_ours:.3f} s, of which non-texture {c_first:.3f} s)")

    fx = import_pyradiomics(args.pyradiomics_site) if args.pyradiomics_site else None
    sub_img, sub_roi = crop(image, mask)
    masks = subregions(sub_roi, spacing)
    if fx is not None:
        sitk_img = to_sitk(image.numpy(), spacing)
        sitk_mask = to_sitk(mask.numpy().astype(np.uint8), spacing)
        ext = pyradiomics_extractor(fx, resample=True)
        t_pyr = timed(lambda: ext.execute(sitk_img, sitk_mask), args.repeats)
        c_pyr = CPU_SECONDS[0]
        figures["gtv_pyradiomics_cpu_s_per_voi"] = c_pyr
        n_pyr = sum(1 for k in ext.execute(sitk_img, sitk_mask) if not k.startswith("diagnostics"))
        figures["gtv_pyradiomics_s_per_voi"] = t_pyr
        print(f"[GTV, config C] PyRadiomics 3.0.1: {t_pyr:.3f} s/VOI ({n_pyr} features); "
              f"ours is {t_pyr / t_ours:.2f}x its speed (CPU {c_pyr:.3f} s; by CPU time {c_pyr / c_ours:.2f}x)")

    # 2. sub-region VOIs on the native grid
    for batch in args.batches:
        reps = (batch + 15) // 16
        voi_masks = masks.repeat(reps, 1, 1, 1)[:batch].to(device)
        voi_imgs = sub_img[None].expand(batch, -1, -1, -1).contiguous().to(device)
        t_b = timed(lambda m=voi_masks, i=voi_imgs: extract_features(i, m, spacing, SUBREGION_SETTINGS),
                    args.repeats)
        c_b = CPU_SECONDS[0]
        t_nt = timed(lambda m=voi_masks, i=voi_imgs: extract_features(i, m, spacing, SUBREGION_SETTINGS,
                                                                      families=NON_TEXTURE), args.repeats)
        c_nt = CPU_SECONDS[0]
        figures[f"sub_ours_vois_per_s_b{batch}"] = batch / t_b
        figures[f"sub_ours_vois_per_cpu_s_b{batch}"] = batch / c_b
        figures[f"sub_ours_non_texture_vois_per_cpu_s_b{batch}"] = batch / c_nt
        figures[f"sub_ours_non_texture_vois_per_s_b{batch}"] = batch / t_nt
        print(f"[sub-regions, batch {batch}] ours: {batch / t_b:.1f} VOIs/s ({t_b:.3f} s per batch); "
              f"without texture {batch / t_nt:.1f} VOIs/s; per CPU second: {batch / c_b:.2f} VOIs "
              f"({batch / c_nt:.2f} without texture)")
    if fx is not None:
        ext = pyradiomics_extractor(fx, resample=False)
        sitk_img = to_sitk(sub_img.numpy(), spacing)
        sitk_masks = [to_sitk(m.numpy().astype(np.uint8), spacing) for m in masks]
        t_loop = timed(lambda: [ext.execute(sitk_img, m) for m in sitk_masks], max(1, args.repeats // 2))
        rate = len(sitk_masks) / t_loop
        cpu_rate = len(sitk_masks) / CPU_SECONDS[0]
        figures["sub_pyradiomics_vois_per_s"] = rate
        figures["sub_pyradiomics_vois_per_cpu_s"] = cpu_rate
        best = max(v for k, v in figures.items() if k.startswith("sub_ours_vois_per_s_b"))
        best_cpu = max(v for k, v in figures.items() if k.startswith("sub_ours_vois_per_cpu"))
        print(f"[sub-regions] PyRadiomics 3.0.1: {rate:.1f} VOIs/s, {cpu_rate:.2f} VOIs per CPU second; ours (best "
              f"batch) is {best / rate:.2f}x by wall time, {best_cpu / cpu_rate:.2f}x by CPU time")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
