import math

import pytest

from engine.schedule import lr_lambda


def test_cosine_with_warmup():
    f = lr_lambda("cosine", steps_per_epoch=10, epochs=10, warmup_epochs=1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_step_decay_at_milestones():
    f = lr_lambda("step", steps_per_epoch=4, epochs=150, milestones=(60, 120), decay=0.1)
    assert f(0) == 1.0 and f(60 * 4 - 1) == 1.0
    assert f(60 * 4) == pytest.approx(0.1) and f(120 * 4) == pytest.approx(0.01)


def test_step_warmup_ramps_to_the_decayed_rate_of_a_milestone_inside_it():
    f = lr_lambda("step", steps_per_epoch=4, epochs=10, warmup_epochs=2, milestones=(1,), decay=0.1)
    assert f(0) == pytest.approx(0.125) and f(3) == pytest.approx(0.5)       # before the milestone
    assert f(4) == pytest.approx(0.1 * 5 / 8) and f(7) == pytest.approx(0.1)  # after it: never above 0.1
    assert f(8) == pytest.approx(0.1) and max(f(s) for s in range(4, 40)) == pytest.approx(0.1)


def test_unknown_schedule_fails_when_built():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_lambda("linear", 1, 1)
