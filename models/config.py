"""Typed model/training presets (``configs/model.yaml``) and the one place that builds a network from them.

Both the centralized path (:mod:`fl_client.centralized`) and the federated client build their networks
with :func:`build_model`, so a federated model and its centralized ceiling are the same architecture.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.exceptions import ModelConfigError
from models.fusion import BRANCHES, DEEP_BRANCHES, FusionNet

log = logging.getLogger(__name__)

#: The networks that can be the product model (``model.kind``) and are cross-fitted into ``metrics.json``:
#: ``wide`` (the fusion net's linear path alone: volume + reader SLD level/slope + clinical covariates; the
#: default, because the deep part does not beat it on the trial cohort — docs/models.md "Default model"),
#: the ``fusion`` net (deep branches + wide path) and each deep branch alone.
MODEL_KINDS: dict[str, tuple[str, ...]] = {
    "wide": ("wide",),
    "fusion": BRANCHES,
    "stgcn": ("stgcn",),
    "transformer": ("transformer",),
}
#: Diagnostic kind, not part of ``metrics.json`` by default: the fusion model without its wide path (the deep
#: branches alone), to show what the deep half contributes.
DIAGNOSTIC_KINDS: dict[str, tuple[str, ...]] = {
    "deep": DEEP_BRANCHES,
}
#: The product model when ``model.kind`` is not set.
DEFAULT_KIND = "wide"


def _check_kinds(kinds: Sequence[str], allowed: Sequence[str], what: str) -> None:
    unknown = [k for k in kinds if k not in allowed]
    if unknown:
        raise ValueError(f"{what} must be among {sorted(allowed)}, but was {unknown[0]!r}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NetworkSettings(_Frozen):
    #: the product model: what the centralized final model and the federated (DP-SGD + CKKS) task train,
    #: what ``predictions.csv``, the federated-vs-centralized comparison and the reports are about
    kind: str = DEFAULT_KIND
    v_max: int = Field(default=64, ge=1)
    stgcn_channels: tuple[int, ...] = (32, 32, 64, 64)
    d_model: int = Field(default=32, ge=2)
    embed_dim: int = Field(default=64, ge=2)
    hidden: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    wide_gain: float = Field(default=1.0, gt=0.0)
    deep_gain: float = Field(default=1.0, gt=0.0)
    wide_groups: tuple[str, ...] | None = None  # global groups read by the wide path; None: all
    wide_nodes: bool = True  # the wide path also reads the node features pooled over valid sub-regions

    @field_validator("kind")
    @classmethod
    def _product_kind(cls, kind: str) -> str:
        _check_kinds([kind], tuple(MODEL_KINDS), "model.kind")
        return kind


class LossWeightSettings(_Frozen):
    response: float = Field(default=1.0, ge=0)
    risk: float = Field(default=0.5, ge=0)
    pseudo: float = Field(default=0.3, ge=0)


class TrainSettings(_Frozen):
    epochs: int = Field(default=40, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    loss_weights: LossWeightSettings = Field(default_factory=LossWeightSettings)


class EvaluationSettings(_Frozen):
    cv_folds: int = Field(default=5, ge=2)
    leave_one_site_out: bool = True
    durable_benefit_day: int = Field(default=183, gt=0)
    #: inner folds of the training fold whose out-of-fold scores fix the Youden cut-off (0: in-sample fit)
    cutoff_folds: int = Field(default=3, ge=0)
    #: networks cross-fitted per fold (the baselines always are); must hold ``model.kind``. Every kind costs
    #: a full cross-fit, so a benchmark can ask for the product kind alone
    kinds: tuple[str, ...] = tuple(MODEL_KINDS)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        _check_kinds(kinds, (*MODEL_KINDS, *DIAGNOSTIC_KINDS), "evaluation.kinds")
        return tuple(dict.fromkeys(kinds))  # each kind once, in the given order


class ModelSettings(_Frozen):
    """Typed view of ``configs/model.yaml``."""

    model: NetworkSettings = Field(default_factory=NetworkSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @model_validator(mode="after")
    def _product_is_cross_fitted(self) -> ModelSettings:
        if self.model.kind not in self.evaluation.kinds:
            raise ValueError(f"evaluation.kinds {list(self.evaluation.kinds)} must include the product model "
                             f"model.kind {self.model.kind!r} (its out-of-fold scores are predictions.csv)")
        return self


def load_model_config(path: Path) -> ModelSettings:
    """Read and validate the model presets from ``path`` (usually ``configs/model.yaml``).

    The caller resolves the path (e.g. ``evaluation.protocol.configs_dir() / "model.yaml"``): ``models``
    imports nothing else of ours.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return ModelSettings.model_validate(data)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ModelConfigError(f"cannot use model config {path}: {exc}; fix the file or pass another") from exc


@dataclass(frozen=True)
class InputDims:
    """Input sizes of a dataset: F node features, G global features (with their groups), C clinical."""

    node_features: int
    global_features: int
    clinical_features: int
    groups: tuple[tuple[int, ...], ...]
    group_names: tuple[str, ...] = ()  # name of each entry of ``groups`` (empty when unknown)

    @staticmethod
    def from_group_names(node_features: int, group_names: Sequence[str], clinical_features: int) -> InputDims:
        """Group the global columns by name (e.g. ``shape``, ``intensity``, ``texture``, ``dhi``), first-seen order."""
        order: dict[str, list[int]] = {}
        for index, name in enumerate(group_names):
            order.setdefault(name, []).append(index)
        return InputDims(node_features, len(group_names), clinical_features, tuple(tuple(v) for v in order.values()),
                         tuple(order))

    def columns_of(self, names: Sequence[str] | None) -> list[int] | None:
        """Global column indices of the groups ``names`` (None: all). When the data has none of these
        groups (e.g. synthetic records with other group names) the wide path reads every column, logged."""
        if names is None:
            return None
        picked = [i for name, cols in zip(self.group_names, self.groups, strict=False) if name in names for i in cols]
        if not picked:
            _warn_wide_fallback(tuple(names), self.group_names)
            return None
        return sorted(picked)


@functools.lru_cache(maxsize=16)
def _warn_wide_fallback(names: tuple[str, ...], present: tuple[str, ...]) -> None:
    """Once per combination (every fold builds a model)."""
    log.warning("none of the wide groups %s in the data's groups %s: the wide path reads every global column",
                list(names), list(present))


def build_model(kind: str, n_timepoints: int, dims: InputDims, settings: NetworkSettings) -> FusionNet:
    """The network ``kind`` (one of :data:`MODEL_KINDS` — ``wide``, ``fusion``, ``stgcn``, ``transformer`` — or
    the diagnostic ``deep``) for a mode with ``n_timepoints`` scans; the product model is ``settings.kind``."""
    kinds = MODEL_KINDS | DIAGNOSTIC_KINDS
    if kind not in kinds:
        raise ModelConfigError(f"model kind must be one of {sorted(kinds)}, but was {kind!r}")
    return FusionNet(
        node_features=dims.node_features,
        global_features=dims.global_features,
        clinical_features=dims.clinical_features,
        n_timepoints=n_timepoints,
        branches=kinds[kind],
        groups=[list(g) for g in dims.groups],
        stgcn_channels=settings.stgcn_channels,
        d_model=settings.d_model,
        embed_dim=settings.embed_dim,
        hidden=settings.hidden,
        dropout=settings.dropout,
        wide_gain=settings.wide_gain,
        deep_gain=settings.deep_gain,
        wide_columns=dims.columns_of(settings.wide_groups),
        wide_nodes=settings.wide_nodes,
    )
