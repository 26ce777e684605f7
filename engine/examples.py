"""FAME examples for the logs: original frame | mask | merged frame, one row per clip."""
from __future__ import annotations

import numpy as np

MAX_EXAMPLES = 4


def fame_example_images(original: np.ndarray, masks: np.ndarray, merged: np.ndarray) -> list[np.ndarray]:
    """original, merged: (B, T, H, W, 3) uint8 (NTHWC); masks (B, H, W) {0,1}.
    Returns per clip one HWC uint8 strip of the middle frame: original | mask | merged."""
    assert original.ndim == 5 and original.shape[-1] == 3, f"expected NTHWC clips, got {original.shape}"
    rows = []
    for b in range(min(MAX_EXAMPLES, original.shape[0])):
        t = original.shape[1] // 2
        mask = np.repeat((np.asarray(masks[b]) * 255).astype(np.uint8)[..., None], 3, axis=-1)
        rows.append(np.concatenate([original[b, t], mask, merged[b, t]], axis=1))
    return rows
