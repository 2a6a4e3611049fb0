"""``label_boxes`` (lesion QC's per-label bounding boxes, scanned inside the joint box of all labels) equals
``scipy.ndimage.find_objects`` on the whole volume — the second method — for C- and Fortran-ordered volumes,
absent labels, labels above ``max_label``, empty volumes and boxes touching the edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fl_client.ingest.qc import label_boxes


@pytest.mark.parametrize("order", ["C", "F"])
def test_equals_find_objects_on_the_whole_volume(order: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 24, 3))
        labels = np.zeros(shape, np.uint8, order=order)
        n = int(rng.integers(0, 5))
        for label in range(1, n + 1):
            if rng.random() < 0.8:  # some labels stay absent
                lo = [int(rng.integers(0, s)) for s in shape]
                hi = [int(rng.integers(a, s)) + 1 for a, s in zip(lo, shape, strict=True)]
                labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = label
        max_label = max(n + int(rng.integers(-1, 2)), 0)  # below, at and above the highest label present
        assert label_boxes(labels, max_label) == list(ndimage.find_objects(labels, max_label=max_label))


def test_an_empty_volume_has_no_boxes() -> None:
    assert label_boxes(np.zeros((4, 5, 6), np.uint16), 3) == [None, None, None]
