"""Learning-rate schedules as per-step multipliers for torch's LambdaLR."""
from __future__ import annotations

import math
from collections.abc import Callable


def lr_lambda(kind: str, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0,
              milestones: tuple = (), decay: float = 0.1) -> Callable[[int], float]:
    """Linear warmup, then cosine to 0 over the remaining steps; or x`decay` at each milestone
    epoch, with the warmup ramping up to the decayed rate where a milestone falls inside it."""
    if kind not in ("cosine", "step"):
        raise ValueError(f"unknown schedule '{kind}': expected cosine or step")
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        if kind == "step":
            epoch = step / steps_per_epoch
            return ramp * decay ** sum(epoch >= m for m in milestones)
        if step < warmup:
            return ramp
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor
