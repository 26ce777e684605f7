"""measure.bench_fame: whole-batch rates and the per-part breakdown, on small clips."""
import json
import math

import pytest

from measure import bench_fame


@pytest.fixture
def small_sizes(monkeypatch):
    monkeypatch.setattr(bench_fame, "SIZES", (16,))
    monkeypatch.setattr(bench_fame, "BATCHES", (2,))
    monkeypatch.setattr(bench_fame, "GPU_BATCHES", (2,))
    monkeypatch.setattr(bench_fame, "PART_BATCH", {"numpy": 3, "cupy": 3})


def test_rates_cover_every_dtype(small_sizes, tmp_path, capsys):
    path = tmp_path / "fame.json"
    bench_fame.main(["--repeats", "2", "--json", str(path)])
    rows = [row for row in json.loads(path.read_text())["results"] if row["backend"] == "numpy"]
    assert sorted(row["dtype"] for row in rows) == ["float32", "uint8"]
    for row in rows:
        assert (row["size"], row["batch"], row["frames"]) == (16, 2, bench_fame.FRAMES)   # the sizes asked for
        assert 0 < row["median_s"] < math.inf and row["clips_per_s"] == pytest.approx(2 / row["median_s"])
    assert "clips/s" in capsys.readouterr().out


def test_parts_time_each_part_of_the_op(small_sizes, tmp_path, capsys):
    path = tmp_path / "parts.json"
    bench_fame.main(["--parts", "--repeats", "2", "--json", str(path)])
    rows = [row for row in json.loads(path.read_text())["parts"] if row["backend"] == "numpy"]
    assert [row["part"] for row in rows] == ["whole op", "seed region and mean frame", "soft mask",
                                             "top-k selection", "merge"]
    assert all(row["host_ms"] > 0 and row["gpu_ms"] is None and row["batch"] == 3 for row in rows)
    assert "top-k selection" in capsys.readouterr().out


def test_bad_repeats_exit():
    with pytest.raises(SystemExit):
        bench_fame.main(["--repeats", "0"])


def test_backend_numpy_times_numpy_only(small_sizes, tmp_path):
    path = tmp_path / "fame.json"
    bench_fame.main(["--repeats", "1", "--backend", "numpy", "--json", str(path)])
    assert {row["backend"] for row in json.loads(path.read_text())["results"]} == {"numpy"}


def test_backend_cupy_without_a_gpu_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(bench_fame, "cupy_device", lambda: (None, None))
    with pytest.raises(SystemExit) as exit_info:
        bench_fame.main(["--backend", "cupy"])
    assert exit_info.value.code == 2
    assert "make doctor" in capsys.readouterr().err
