"""Typed errors of the radiomics engine.

Each message says what is wrong, the value seen, and what to do about it.
"""

from __future__ import annotations


class RadiomicsError(ValueError):
    """Base class of every input error raised by :mod:`radiomics`."""


class EmptyMaskError(RadiomicsError):
    """A region of interest holds no voxel (before or after re-segmentation)."""


class MaskOutsideImageError(RadiomicsError):
    """A mask touches voxels that the image does not cover (different extent or out-of-field voxels)."""


class GeometryMismatchError(RadiomicsError):
    """Image and mask (or a batch of them) do not share shape or voxel spacing."""


class NonCTIntensityError(RadiomicsError):
    """Intensities are not plausible CT values in Hounsfield units."""


class SettingsError(RadiomicsError):
    """An :class:`radiomics.preprocess.IbsiSettings` combination is invalid."""
