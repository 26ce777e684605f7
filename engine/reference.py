"""What a run's figures are to be compared against, printed at the end of runners.pretrain and
runners.classify, so that a first run says by itself whether it learnt anything.

- The pretext task: the loss of an embedding that tells nothing apart is ln(K + 1) (every
  logit equal: K queue keys and the positive), and its contrastive top-1 is 100 / (K + 1).
  The run's own loss and top-1 at its start and end (means over the first and last fifth of
  the logged steps) say whether it falls below that and keeps falling; its margin (ln(K + 1)
  less the highest mean loss over a tenth of the logged steps, the first tenth left out) says
  whether it stays below all along or drifts back toward a constant embedding on the way.
- The probes: chance (100 / classes) and the figures of the config's ``reference`` section
  (engine.config.ReferenceConfig: MoCo without FAME, MoCo + FAME and the supervised control on
  the same data, as measured; docs/benchmarks.md), where the config has them.
"""
from __future__ import annotations

import math

SHARE = 5     # the pretext trend compares the first and the last fifth of the logged steps
WINDOWS = 10  # the pretext margin takes the loss's mean over each tenth of the logged steps


def pretext_trend(rows: list[dict], K: int) -> dict | None:
    """Means of the loss and the contrastive top-1 over the first and the last fifth of the logged
    training rows (those with a "loss" and an "acc1"), and the loss's margin below ln(K + 1)
    (pretext_margin); None when there are none."""
    rows = [r for r in rows if "loss" in r and "acc1" in r]
    if not rows:
        return None
    n = max(1, len(rows) // SHARE)

    def mean(part, key):
        return sum(r[key] for r in part) / len(part)
    first, last = rows[:n], rows[-n:]
    return {"loss_start": mean(first, "loss"), "loss_end": mean(last, "loss"), "acc1_start": mean(first, "acc1"),
            "acc1_end": mean(last, "acc1"), "steps": (first[0].get("step"), last[-1].get("step")),
            "margin": pretext_margin(rows, K)}


def pretext_margin(rows: list[dict], K: int) -> float | None:
    """ln(K + 1) less the highest mean pretext loss over a tenth of the logged rows, the first
    tenth left out (every run starts near ln(K + 1)); None when no row has a loss. Near 0 or
    below: somewhere in the run the embedding told clips apart little or not at all."""
    losses = [r["loss"] for r in rows if "loss" in r]
    if not losses:
        return None
    size = max(1, len(losses) // WINDOWS)
    windows = [losses[i:i + size] for i in range(size, len(losses), size)] or [losses]
    return math.log(K + 1) - max(sum(w) / len(w) for w in windows)


def format_pretext(trend: dict | None, K: int) -> str:
    """The pretext trend (pretext_trend) against ln(K + 1) and 100 / (K + 1)."""
    nothing = math.log(K + 1)
    if trend is None:
        return f"pretext: no steps logged (ln(K+1) = {nothing:.2f})"
    verdict = ("falling and below ln(K+1): the embedding tells clips apart"
               if trend["loss_end"] < trend["loss_start"] and trend["loss_end"] < nothing - 0.5 else
               "not falling well below ln(K+1): the embedding tells clips apart little or not at all")
    return (f"pretext: loss {trend['loss_start']:.2f} -> {trend['loss_end']:.2f} and contrastive top-1 "
            f"{trend['acc1_start']:.0f}% -> {trend['acc1_end']:.0f}% (first -> last fifth of the logged steps); "
            f"an embedding that tells nothing apart scores ln(K+1) = {nothing:.2f} and {100 / (K + 1):.1f}%: "
            f"{verdict}; the highest mean loss over a tenth of the run after the first is {trend['margin']:.2f} "
            f"below ln(K+1)")


def format_reference(reference, num_classes: int, protocol: str = "linear") -> str:
    """Chance, and the reference section's measured figures where it has them."""
    parts = [f"chance {100 / num_classes:.1f}"]
    if protocol == "linear":
        for label, value in (("MoCo without FAME", reference.moco_top1), ("MoCo + FAME", reference.fame_top1)):
            if value is not None:
                parts.append(f"{label} {value:.1f}")
    if reference.control_top1 is not None:
        parts.append(f"the supervised control {reference.control_top1:.1f}")
    where = f" ({reference.note})" if reference.note and len(parts) > 1 else ""
    return "compare with (video top-1 on this config's test split): " + ", ".join(parts) + where
