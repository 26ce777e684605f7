"""Automatic mixed precision: train.amp's names and the autocast dtype each stands for."""
from __future__ import annotations

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (train.amp: bf16|fp16|none) on a GPU; None (plain fp32) on the CPU."""
    return AMP_DTYPES.get(amp) if device.type == "cuda" else None
