"""A seeded, in-memory dataset of the documented model-input shape (tests and benchmarks only).

It stands in for the cohort → ingest → assess → featurize chain when that chain is not available:
each patient gets a sub-region graph (T = 3, V = 6–12 nodes, F node features, centroids in mm),
a global feature trajectory (T, G) in three groups, clinical covariates (C,), and labels whose
signal lies in the T0→T1 change (so early mode can learn it), with noise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from fl_client.train import PatientRecord

N_NODE_FEATURES = 6
N_GLOBAL = 9
GLOBAL_GROUPS = ["shape"] * 3 + ["intensity"] * 3 + ["texture"] * 3
N_CLINICAL = 5


def _graph(rng: np.random.Generator, latent: float, days: np.ndarray) -> Data:
    v = int(rng.integers(6, 13))
    pos = rng.normal(0.0, 15.0, size=(v, 3))
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    nearest = np.argsort(dist, axis=1)[:, 1:4]
    edges = {(i, int(j)) for i in range(v) for j in nearest[i]}
    edges |= {(j, i) for i, j in edges}
    edge_index = torch.tensor(sorted(edges), dtype=torch.long).T
    base = rng.normal(size=(v, N_NODE_FEATURES))
    drift = -latent * np.linspace(0.3, 1.0, N_NODE_FEATURES) + rng.normal(0, 0.4, size=(v, N_NODE_FEATURES))
    elapsed = (days - days[0]) / 60.0
    x = base[None] + elapsed[:, None, None] * drift[None] + rng.normal(0, 0.2, size=(3, v, N_NODE_FEATURES))
    valid = np.ones((3, v), dtype=bool)
    if latent > 0:
        valid[2, rng.random(v) < 0.2] = False  # responding sub-regions vanish by T2
    return Data(
        x=torch.tensor(x, dtype=torch.float32),
        edge_index=edge_index,
        node_valid=torch.tensor(valid),
        days=torch.tensor(days, dtype=torch.float32),
        pos=torch.tensor(pos, dtype=torch.float32),
        num_nodes=v,
    )


def make_records(n: int, seed: int, sites: int = 3) -> list[PatientRecord]:
    """``n`` synthetic patients spread over ``sites`` sites (seeded)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        responder = int(rng.random() < 0.5)
        latent = (1.0 if responder else -0.6) + rng.normal(0, 0.6)
        days = np.array([-7, 62, 104], dtype=float) + rng.integers(-5, 6, size=3)
        trend = -latent * rng.uniform(0.5, 1.0, size=N_GLOBAL)
        start = rng.normal(size=N_GLOBAL)
        globals_ = start[None] + ((days - days[0]) / 60.0)[:, None] * trend[None] + rng.normal(0, 0.3, (3, N_GLOBAL))
        clinical = rng.normal(size=N_CLINICAL)
        clinical[0] += 0.3 * latent
        hazard = np.exp(-0.8 * latent) / 300.0
        pfs = float(rng.exponential(1.0 / hazard))
        event = bool(pfs < 700)
        has_iupd = rng.random() < 0.25
        records.append(
            PatientRecord(
                usubjid=f"FEDRESP-S{i % sites + 1:02d}-{i:04d}",
                site=f"S{i % sites + 1:02d}",
                graph=_graph(rng, latent, days),
                globals_=torch.tensor(globals_, dtype=torch.float32),
                clinical=torch.tensor(clinical, dtype=torch.float32),
                responder={"early": float(responder), "full": float(latent > 0.2), "dcb12": float(latent > 0.6)},
                label_day={"early": float(days[2]), "full": 183.0, "dcb12": 365.0},
                pfs_days=min(pfs, 700.0),
                pfs_event=event,
                pseudo=float(latent > 0) if has_iupd else float("nan"),
                recist_t1="PR" if latent + rng.normal(0, 0.8) > 0.8 else "SD",
                recist_t2="PR" if latent + rng.normal(0, 0.5) > 0.6 else "SD",
            )
        )
    return records


def with_deep_heads(model: torch.nn.Module, seed: int = 11, std: float = 0.5) -> torch.nn.Module:
    """Wide & deep zero-initialises the deep heads (training starts from the linear path); give them weights
    so that the deep branches' inputs really reach the outputs in tests of what the model can see."""
    generator = torch.Generator().manual_seed(seed)
    for head in (model.head_response, model.head_risk, model.head_pseudo):
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
    return model
