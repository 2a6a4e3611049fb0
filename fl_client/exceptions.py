"""Typed errors of the site side (ingest, CRF checks, the site store). Messages name the remedy."""

from __future__ import annotations


class FlClientError(RuntimeError):
    """Base class of every error raised by :mod:`fl_client`."""


class IngestError(FlClientError):
    """A fatal ingest problem: the run stops and the previous store stays as it was."""


class DicomQuarantined(FlClientError):  # noqa: N818 - the name states the outcome, as the house style asks
    """A DICOM object refused for a safety reason (burned-in annotation, unknown patient)."""


class SeriesAssemblyError(FlClientError):
    """A series cannot be turned into a volume (inconsistent geometry, mixed sizes, no slices)."""


class AnnotationError(FlClientError):
    """An annotation cannot be placed on its CT (missing reference, geometry mismatch)."""


class ReidKeyError(FlClientError):
    """The encrypted re-identification key cannot be read or written (wrong passphrase, damaged file)."""


class DvpError(FlClientError):
    """The data validation plan (configs/dvp.yaml) is invalid."""


class StoreError(FlClientError):
    """The site store is missing, incomplete or of an unknown format version."""


class PacsError(FlClientError):
    """A PACS pull cannot go on (refused association, unknown AE title, timeout, bad site configuration)."""
