import math

import pytest

from engine import config as C
from engine.reference import format_pretext, format_reference, pretext_margin, pretext_trend


def test_the_pretext_trend_compares_the_first_and_last_fifth_of_the_logged_steps():
    rows = [{"step": s, "loss": 6.0 - s / 10, "acc1": float(s)} for s in range(1, 11)]
    rows.insert(3, {"step": 3, "test/video_top1": 50.0})        # rows without a loss are not steps
    trend = pretext_trend(rows, 64)
    assert trend["loss_start"] == pytest.approx(5.85) and trend["loss_end"] == pytest.approx(5.05)
    assert (trend["acc1_start"], trend["acc1_end"], trend["steps"]) == (1.5, 9.5, (1, 10))
    assert pretext_trend([{"step": 1}], 64) is None


def test_the_pretext_line_says_whether_the_loss_falls_below_ln_k_plus_1():
    K = 64
    learning = format_pretext({"loss_start": 3.5, "loss_end": 2.0, "acc1_start": 10, "acc1_end": 40,
                               "steps": (1, 9), "margin": 1.2}, K)
    assert f"ln(K+1) = {math.log(65):.2f}" in learning and "3.50 -> 2.00" in learning
    assert "tells clips apart" in learning and "not falling" not in learning
    collapsing = format_pretext({"loss_start": 3.8, "loss_end": 4.1, "acc1_start": 16, "acc1_end": 2,
                                 "steps": (1, 9), "margin": 0.1}, K)
    assert "not falling well below ln(K+1)" in collapsing
    assert "no steps logged" in format_pretext(None, K)


def test_the_pretext_margin_is_the_worst_tenth_after_the_first():
    K = 256
    nothing = math.log(K + 1)
    falling = [{"step": s, "loss": nothing - s / 10, "acc1": float(s)} for s in range(1, 41)]
    # the second tenth (steps 5-8) is the highest after the first: its mean is nothing - 0.65
    assert pretext_margin(falling, K) == pytest.approx(0.65)
    # the same run drifting back to ln(K+1) in its last tenth: the margin says so, the trend's end barely
    drifting = falling[:36] + [{"step": s, "loss": nothing} for s in range(37, 41)]
    assert pretext_margin(drifting, K) == pytest.approx(0.0)
    # a first tenth at ln(K+1) and beyond is every run's start, left out
    late_start = [{"step": s, "loss": nothing + 1} for s in range(1, 5)] + falling[4:]
    assert pretext_margin(late_start, K) == pytest.approx(0.65)
    assert pretext_margin([{"step": 1, "loss": 2.0}], K) == pytest.approx(nothing - 2.0)
    assert pretext_margin([{"step": 1, "test/video_top1": 50.0}], K) is None
    line = format_pretext(pretext_trend(falling, K), K)
    assert line.endswith("0.65 below ln(K+1)")


def test_the_reference_line_names_chance_and_the_measured_figures():
    cfg = C.load_config("configs/synthetic_tiny.yaml", ["reference.moco_top1=30.5", "reference.fame_top1=61",
                                                        "reference.control_top1=100", "reference.note=seeds 4-6"])
    line = format_reference(cfg.reference, 4)
    assert line.endswith("chance 25.0, MoCo without FAME 30.5, MoCo + FAME 61.0, "
                         "the supervised control 100.0 (seeds 4-6)")
    assert "MoCo" not in format_reference(cfg.reference, 4, protocol="finetune")
    assert format_reference(C.ReferenceConfig(note="unused"), 10).endswith("chance 10.0")
    with pytest.raises(C.ConfigError, match="'reference.moco_top1': 101.0 is outside"):
        C.load_config(None, ["reference.moco_top1=101"])
