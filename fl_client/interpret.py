"""Which sub-regions, time points and global features drove a patient's responder score.

Integrated gradients (Sundararajan, Taly & Yan, ICML 2017) with captum, on the response logit of a
:class:`models.fusion.FusionNet`, from a baseline of zeros — in standardized units that is the
training cohort's average patient. Attributions of the node features are summed over features into a
(T, V) map of sub-regions × time points; global (per time point) and clinical features keep their own
attribution. By the completeness axiom all attributions of a patient add up to
``logit(patient) − logit(baseline)`` (checked by the tests).

Outputs (kept at the site with the other patient-level results):
``attributions.csv`` (``USUBJID, MODE, FEATURE, ATTRIBUTION``; FEATURE is ``node NN @ Tk``,
``<global name> @ Tk`` or ``clinical:<name>``), ``attributions_<mode>.npz`` (node map (N, T, V)) and
``attributions_<mode>.png`` (node × time heat maps of the first patients).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from fl_client.train import N_INPUTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attributions:
    """Integrated-gradient attributions of the response logit.

    Attributes
    ----------
    nodes : ndarray, shape (N, T, V)
        Summed over node features; zero for padding/absent sub-regions.
    globals_ : ndarray, shape (N, T, G)
    clinical : ndarray, shape (N, C)
    delta : ndarray, shape (N,)
        Completeness error of the path integral (should be near 0).
    """

    nodes: np.ndarray
    globals_: np.ndarray
    clinical: np.ndarray
    delta: np.ndarray


class _ResponseLogit(nn.Module):
    """Reorders the network inputs so captum attributes to (x, globals_, clinical)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, globals_: Tensor, clinical: Tensor, adjacency: Tensor, valid: Tensor, days: Tensor):
        return self.model(x, adjacency, valid, days, globals_, clinical).response


class _ResponseLogitWithoutNodes(nn.Module):
    """The same for a network that never reads the node features (the ``wide`` model without pooled nodes):
    captum attributes to (globals_, clinical) only, since autograd refuses an input outside the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, globals_: Tensor, clinical: Tensor, x: Tensor, adjacency: Tensor, valid: Tensor, days: Tensor):
        return self.model(x, adjacency, valid, days, globals_, clinical).response


def _reads_nodes(model: nn.Module, tensors: tuple[Tensor, ...]) -> bool:
    """Whether the response logit depends on the node features at all (autograd: is ``x`` in its graph)."""
    x, adjacency, valid, days, glob, clin = (t[:1] for t in tensors)
    x = x.clone().requires_grad_(True)
    logit = model(x, adjacency, valid, days, glob, clin).response.sum()
    return torch.autograd.grad(logit, x, allow_unused=True)[0] is not None


def integrated_gradients(
    model: nn.Module, dataset: TensorDataset, device: torch.device, steps: int = 32, batch_size: int = 64
) -> Attributions:
    """Attributions for every patient of ``dataset`` (from :func:`fl_client.train.to_dataset`)."""
    from captum.attr import IntegratedGradients

    model.eval().to(device)
    reads_nodes = _reads_nodes(model, tuple(t.to(device) for t in dataset.tensors[:N_INPUTS]))
    explainer = IntegratedGradients(_ResponseLogit(model) if reads_nodes else _ResponseLogitWithoutNodes(model))
    nodes, globals_, clinical, deltas = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        x, adjacency, valid, days, glob, clin = (t[start : start + batch_size].to(device) for t in
                                                 dataset.tensors[:N_INPUTS])
        inputs = (x, glob, clin) if reads_nodes else (glob, clin)
        attr, delta = explainer.attribute(
            inputs,
            baselines=tuple(torch.zeros_like(t) for t in inputs),
            additional_forward_args=(adjacency, valid, days) if reads_nodes else (x, adjacency, valid, days),
            n_steps=steps,
            method="gausslegendre",
            return_convergence_delta=True,
        )
        if not reads_nodes:  # a node feature the logit never reads earns no credit
            attr = (torch.zeros_like(x), *attr)
        nodes.append(attr[0].sum(-1).detach().cpu())
        globals_.append(attr[1].detach().cpu())
        clinical.append(attr[2].detach().cpu())
        deltas.append(delta.detach().cpu())
    return Attributions(
        nodes=torch.cat(nodes).numpy(),
        globals_=torch.cat(globals_).numpy(),
        clinical=torch.cat(clinical).numpy(),
        delta=torch.cat(deltas).numpy(),
    )


def attribution_rows(
    attributions: Attributions,
    usubjids: list[str],
    mode: str,
    global_names: list[str],
    clinical_names: list[str],
    node_valid: np.ndarray,
) -> list[dict[str, object]]:
    """Long-format rows (``USUBJID, MODE, FEATURE, ATTRIBUTION``); padding/absent nodes are left out."""
    rows: list[dict[str, object]] = []
    for i, usubjid in enumerate(usubjids):
        t_count, v_count = attributions.nodes.shape[1:]
        for t in range(t_count):
            for v in range(v_count):
                if node_valid[i, t, v]:
                    rows.append({"USUBJID": usubjid, "MODE": mode, "FEATURE": f"node {v:02d} @ T{t}",
                                 "ATTRIBUTION": float(attributions.nodes[i, t, v])})
            for g, name in enumerate(global_names):
                rows.append({"USUBJID": usubjid, "MODE": mode, "FEATURE": f"{name} @ T{t}",
                             "ATTRIBUTION": float(attributions.globals_[i, t, g])})
        for c, name in enumerate(clinical_names):
            rows.append({"USUBJID": usubjid, "MODE": mode, "FEATURE": f"clinical:{name}",
                         "ATTRIBUTION": float(attributions.clinical[i, c])})
    return rows


def plot_node_maps(attributions: Attributions, usubjids: list[str], path: Path, max_patients: int = 6) -> None:
    """Heat maps of sub-region × time-point attributions for the first ``max_patients`` patients (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(max_patients, len(usubjids))
    fig, axes = plt.subplots(count, 1, figsize=(8, 1.2 + 0.9 * count), squeeze=False)
    for i in range(count):
        values = attributions.nodes[i]
        bound = float(np.abs(values).max()) or 1.0
        image = axes[i, 0].imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
        axes[i, 0].set(ylabel="time", yticks=range(values.shape[0]),
                       yticklabels=[f"T{t}" for t in range(values.shape[0])])
        axes[i, 0].set_title(usubjids[i], fontsize=8)
        fig.colorbar(image, ax=axes[i, 0], fraction=0.02)
    axes[-1, 0].set_xlabel("sub-region (node)")
    fig.suptitle("Integrated gradients of the responder logit (red: towards responder)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
