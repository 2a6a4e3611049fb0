"""A tiny stand-in model, dataset and DP-capable train_fn for the federation tests (tests only).

The federation code is generic over any ``nn.Module`` and a ``train_fn``; these keep its tests fast
(milliseconds per round) while going through real Opacus DP-SGD and real TenSEAL CKKS.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

N_FEATURES = 6


class ToyNet(nn.Module):
    """Logistic-regression-sized MLP: ``(B, 6) -> (B,)`` logits."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(-1)


def toy_dataset(n: int, seed: int, shift: float = 0.0) -> TensorDataset:
    """``n`` examples of a linearly separable-ish binary task; ``shift`` moves a site's feature mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=g) + shift
    w = torch.linspace(-1.0, 1.0, N_FEATURES)
    y = ((x - shift) @ w + 0.3 * torch.randn(n, generator=g) > 0).float()
    return TensorDataset(x, y)


def toy_train_fn(epochs: int = 1, lr: float = 0.2, batch_size: int = 16) -> Any:
    """A ``TrainFn``: SGD on BCE; under DP the given engine wraps model, optimizer and loader."""

    def train_fn(model: nn.Module, dataset: Any, dp: Any, generator: torch.Generator) -> tuple[nn.Module, float]:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        if dp is not None:
            noise_g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            model, optimizer, loader = dp.engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=dp.noise_multiplier,
                max_grad_norm=dp.max_grad_norm, noise_generator=noise_g)
        loss_value = float("nan")
        for _ in range(epochs):
            for x, y in loader:
                if len(x) == 0:
                    continue
                optimizer.zero_grad()
                loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
                loss.backward()
                optimizer.step()
                loss_value = float(loss.detach())
        return model, loss_value

    return train_fn


def _trained_so_far(site: str) -> int:
    """How many local trainings this site has finished in this test (reads the counter, does not advance it)."""
    import os
    from pathlib import Path

    counter = Path(os.environ.get("FEDRESPONSE_TOY_STATE", "")) / f"{site}.count"
    return int(counter.read_text()) if os.environ.get("FEDRESPONSE_TOY_STATE") and counter.exists() else 0


def _call_number(site: str) -> int:
    """How many times this site has trained in this test (counter file under FEDRESPONSE_TOY_STATE)."""
    import os
    from pathlib import Path

    state = os.environ.get("FEDRESPONSE_TOY_STATE")
    if not state:
        return 1
    counter = Path(state) / f"{site}.count"
    number = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(number))
    return number


def toy_task(site: str, site_input: Any, settings: Any) -> Any:
    """A ``TaskFactory`` for the Flower tests: 20 + 10·k examples at site ``S0k`` (first 75 % "training").

    Fault injection (test-only, through the environment so that simulation workers and SuperNode
    subprocesses see it): ``FEDRESPONSE_TOY_FAIL=S02:2`` makes S02 crash in its 2nd local training;
    ``FEDRESPONSE_TOY_SLOW=S03:90:2`` makes S03 sleep 90 s in its 2nd (a straggler);
    ``FEDRESPONSE_TOY_SHRINK=S01:16:2`` leaves S01 with its first 16 examples once it has trained 2 rounds
    (patients who withdrew consent after the handshake: a larger sample rate, more ε per round than planned).
    Calls are counted in ``FEDRESPONSE_TOY_STATE`` (a folder).
    """
    import os
    import time

    from fl_client.federated import SiteData, SiteTask

    index = int(site[1:])
    train = toy_train_fn(epochs=1, batch_size=settings.batch_size)

    def faulty_train(model: nn.Module, data: Any, dp: Any, g: torch.Generator) -> tuple[nn.Module, float]:
        call = _call_number(site)
        fail_site, _, fail_call = os.environ.get("FEDRESPONSE_TOY_FAIL", "").partition(":")
        if fail_site == site and int(fail_call or call) == call:
            raise RuntimeError(f"{site}: simulated crash in the middle of local training (call {call})")
        slow_site, _, rest = os.environ.get("FEDRESPONSE_TOY_SLOW", "").partition(":")
        seconds, _, slow_call = rest.partition(":")
        if slow_site == site and int(slow_call or call) == call:
            time.sleep(float(seconds))
        return train(model, data, dp, g)

    data = SiteData(site, toy_dataset(20 + 10 * index, seed=index, shift=0.2 * index))
    shrink_site, _, rest = os.environ.get("FEDRESPONSE_TOY_SHRINK", "").partition(":")
    keep, _, after = rest.partition(":")
    if shrink_site == site and _trained_so_far(site) >= int(after or 0):
        data = SiteData(site, TensorDataset(*(t[: int(keep)] for t in data.train.tensors)))
    ids = [f"TOY-{site}-{i + 1:04d}" for i in range(data.n_examples)]
    cut = round(0.75 * len(ids))

    def evaluate(model: nn.Module, data: Any, site_dir: Any) -> dict[str, float]:
        """Scores every toy patient (both modes, the same score) into the site's predictions.csv."""
        from sklearn.metrics import roc_auc_score

        from fl_client.federated import write_site_predictions

        x, y = data.train.tensors
        with torch.no_grad():
            scores = torch.sigmoid(model(x)).numpy()
        rows = [f"{ids[i]},{mode},{scores[i]:.6f},{int(y[i])},{30 + 7 * i},{i % 2}" for mode in ("early", "full")
                for i in range(len(ids))]
        write_site_predictions(site_dir / "predictions.csv", rows)
        return {"auc": float(roc_auc_score(y.numpy(), scores)), "n_test": float(len(ids) - cut)}

    return SiteTask(ToyNet, data, faulty_train, evaluate, (tuple(ids[:cut]), tuple(ids[cut:])))
