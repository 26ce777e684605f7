"""Learning-rate schedules as per-step multipliers for torch's LambdaLR."""
from __future__ import annotations

import math
from typing import Callable


def lr_lambda(kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
              milestones: tuple = (), decay: float = 0.1) -> Callable[[int], float]:
    """Linear warmup, then cosine to 0 over the remaining steps, or x`decay` at each milestone epoch."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if kind == "step":
            epoch = step / steps_per_epoch
            return decay ** sum(epoch >= m for m in milestones)
        raise ValueError(f"unknown schedule '{kind}': expected cosine or step")
    return factor
