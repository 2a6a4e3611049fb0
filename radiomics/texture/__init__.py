"""IBSI texture feature families in PyTorch, batched over many VOIs, on CPU or CUDA.

GLCM, GLRLM, GLSZM, GLDZM, NGTDM and NGLDM as defined by the IBSI reference manual (Zwanenburg et al.,
Radiology 2020; arXiv:1612.07003 §3.6-3.11), with its 2D, 2.5D and 3D aggregations. All families work
on the ROI voxels of the whole batch at once (gathers over neighbour offsets, bincounts over encoded
matrix entries); there is no Python loop over voxels or VOIs.

Example
-------
>>> feats = texture_features(levels, mask, 32, dims="3D")   # levels, mask: (B, Z, Y, X)
>>> feats["cm_contrast_3D_avg"].shape                       # (B,)
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import checked_grid, levels_per_voi
from radiomics.texture.glcm import glcm_features, glcm_from_grid
from radiomics.texture.gldzm import gldzm_features, gldzm_from_grid, morph_grid_for
from radiomics.texture.glrlm import glrlm_features, glrlm_from_grid
from radiomics.texture.glszm import glszm_features, glszm_from_grid
from radiomics.texture.ngldm import ngldm_features, ngldm_from_grid
from radiomics.texture.ngtdm import ngtdm_features, ngtdm_from_grid

__all__ = [
    "glcm_features",
    "gldzm_features",
    "glrlm_features",
    "glszm_features",
    "ngldm_features",
    "ngtdm_features",
    "texture_features",
]


def texture_features(
    levels: torch.Tensor,
    mask: torch.Tensor,
    n_levels: int | torch.Tensor,
    *,
    dims: str,
    spacing: tuple[float, float, float] | None = None,
    morph_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every IBSI texture feature of one dimensionality for a batch of VOIs.

    The single-family functions (:func:`glcm_features`, ..., :func:`ngtdm_features`) take the same arguments,
    ``spacing`` aside and ``morph_mask`` only for :func:`gldzm_features`, and return that family's tags.

    Parameters
    ----------
    levels : torch.Tensor
        ``(B, Z, Y, X)`` int64 discretised grey levels 1..n_levels inside the ROI (0 or anything outside).
        VOIs of different sizes are zero-padded into one tensor; ``Z`` is the slice axis of 2D texture.
    mask : torch.Tensor
        ``(B, Z, Y, X)`` bool intensity-ROI mask (after re-segmentation).
    n_levels : int or torch.Tensor
        Number of discretisation levels ``N_g``: one int for the batch, or an ``(B,)`` integer tensor with each
        VOI's own ``N_g`` (fixed bin size). Only ``cm_inv_diff_norm_*`` and ``cm_inv_diff_mom_norm_*`` depend on
        it; matrices are sized by the largest, so one call serves a batch of mixed ``N_g`` and a VOI's features
        never depend on the other VOIs of its batch.
    dims : str
        ``"2D"``: slice-wise matrices, returning the IBSI 2D and 2.5D aggregations; ``"3D"``: volumetric.
    spacing : tuple of float, optional
        ``(z, y, x)`` voxel spacing in mm. Accepted for a uniform extractor interface and checked to be
        positive; IBSI texture matrices at Chebyshev distance 1 do not depend on it.
    morph_mask : torch.Tensor, optional
        ``(B, Z, Y, X)`` bool morphological mask (before re-segmentation) for the GLDZM distance map;
        defaults to ``mask``.

    Returns
    -------
    dict of str to torch.Tensor
        IBSI tag (``cm_joint_max_2D_avg``, ``szm_sze_3D``, ...) -> ``(B,)`` float64 on the input device.
        272 tags for ``"2D"`` (GLCM and GLRLM in 4 aggregations, the other four families in 2), 136 for
        ``"3D"`` -- exactly the texture tags of the IBSI reference CSVs. A VOI on which a feature is
        undefined (no voxel pair, a single grey level for correlation) gets NaN.

    Raises
    ------
    radiomics.exceptions.RadiomicsError
        On a bad ``dims``/``n_levels``, mismatched shapes, dtypes or devices, or levels outside 1..n_levels.
    """
    grid = checked_grid(levels, mask, n_levels, dims, spacing)
    n_max, per_voi = levels_per_voi(n_levels, levels.shape[0], levels.device)
    out: dict[str, torch.Tensor] = {}
    out.update(glcm_from_grid(grid, n_max, dims, per_voi))
    out.update(glrlm_from_grid(grid, n_max, dims))
    out.update(glszm_from_grid(grid, n_max, dims))
    out.update(gldzm_from_grid(grid, morph_grid_for(grid, levels, morph_mask), n_max, dims))
    out.update(ngtdm_from_grid(grid, n_max, dims))
    out.update(ngldm_from_grid(grid, n_max, dims))
    return out
