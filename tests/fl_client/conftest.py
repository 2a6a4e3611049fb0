"""Fixtures shared by the fl_client tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread is faster, and far faster on a shared, oversubscribed CPU.

    Training-step modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; the Flower
    and ingest tests keep torch's default.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
