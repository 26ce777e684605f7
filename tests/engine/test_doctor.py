"""runners.doctor: each check's PASS/FAIL/SKIP with the failure injected, the exit codes, the
command on this machine, and the preflight of GPU runs (engine.setup.resolve_device)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from engine import checks, doctor, smoke, stack
from engine import setup as common
from engine.config import load_config
from engine.logger import GIB
from runners import doctor as doctor_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPU = checks.Context(device="auto", amp="bf16", nproc=1, gpu=False, no_gpu_reason="no CUDA GPU is visible (test)")
GPU = checks.Context(device="gpu", amp="bf16", nproc=1, gpu=True)
SHIFT_PIXELS = 8
CUBLAS_12_MISSING = "libcublas.so.12: cannot open shared object file: No such file or directory"


def check_named(name: str) -> checks.Check:
    return next(check for check in doctor.CHECKS if check.name == name)


def run_named(name: str, context: checks.Context = CPU) -> checks.Result:
    return checks.run_check(check_named(name), context)


def fail_cublas(name: str):
    if name == "cublas":
        raise OSError(CUBLAS_12_MISSING)
    return name


# ------------------------------------------------------------ libraries and majors ----
def test_a_library_that_does_not_load_fails_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setattr(stack, "load_cupy_library", fail_cublas)
    result = run_named("load cuBLAS")
    line = checks.format_result(result)
    assert result.status == checks.FAIL
    assert "cuBLAS" in line and "fame.mask" in line and CUBLAS_12_MISSING in line
    assert "fix: run `make setup`" in line and "pip uninstall -y nvidia-dali-cuda120 cupy-cuda12x" in line
    assert run_named("load cuFFT").status == checks.PASS


def test_every_library_check_passes_here_and_the_training_path_s_are_quick():
    for library in stack.CUDA_LIBRARIES:
        result = run_named(f"load {library.name}")
        assert result.status == checks.PASS, checks.format_result(result)
        check = check_named(f"load {library.name}")
        assert check.quick == library.quick and not check.needs_gpu
    quick = {library.name for library in stack.CUDA_LIBRARIES if library.quick}
    assert {"cuBLAS", "cuFFT", "NVRTC", "DALI backend", "cuDNN"} <= quick and "cuRAND" not in quick


def test_the_nvdec_decode_check_skips_when_the_config_decodes_on_the_cpu():
    result = smoke.check_gpu_decode(checks.Context(decode="cpu", gpu=True))
    assert result.status == checks.SKIP and "data.decode is cpu" in result.detail


def test_disagreeing_majors_fail_with_the_packages_and_the_fix(monkeypatch):
    monkeypatch.setattr(stack, "cupy_cuda_major", lambda: "12")
    monkeypatch.setattr(stack, "dali_cuda_major", lambda: "12")
    line = checks.format_result(run_named("CUDA majors agree"))
    assert line.startswith("FAIL") and "torch 13, CuPy 12, DALI 12" in line and "disagree" in line
    assert "nvidia-dali-cuda120 cupy-cuda12x" in line and "make setup" in line


def test_two_dali_wheels_fail_the_majors_check(monkeypatch):
    wheels = ["cupy-cuda13x", "nvidia-dali-cuda120", "nvidia-dali-cuda130"]
    monkeypatch.setattr(stack, "installed_wheels", lambda: wheels)
    result = run_named("CUDA majors agree")
    assert result.status == checks.FAIL and "two DALI wheels are installed (CUDA 12, 13)" in result.detail


def test_a_cpu_only_torch_fails_the_torch_check(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    result = run_named("torch")
    assert result.status == checks.FAIL and "CPU-only build" in result.detail and "make setup" in result.fix
    assert run_named("load torch CUDA").status == checks.FAIL


def test_versions_name_the_cuda_of_each_package():
    assert "CUDA 13" in run_named("torch").detail
    assert "cupy-cuda13x" in run_named("cupy").detail
    assert run_named("dali").detail.endswith("CUDA 13")


# ------------------------------------------------------------ the GPU ----
def test_without_a_gpu_the_gpu_check_skips_and_gpu_only_checks_skip_with_the_reason():
    assert run_named("gpu").status == checks.SKIP
    for check in doctor.CHECKS:
        if check.needs_gpu:
            result = checks.run_check(check, CPU)
            assert result.status == checks.SKIP and result.detail == CPU.no_gpu_reason, check.name


def test_device_gpu_without_a_gpu_fails():
    context = checks.Context(device="gpu", gpu=False, no_gpu_reason="no CUDA GPU is visible (test)")
    result = run_named("gpu", context)
    assert result.status == checks.FAIL and "'device' is 'gpu'" in result.detail and "device=auto" in result.fix


def test_a_driver_older_than_cuda_13_fails_with_the_driver_branch(monkeypatch):
    monkeypatch.setattr(stack, "driver_cuda_version", lambda: 12040)
    result = run_named("gpu")
    assert result.status == checks.FAIL and "supports CUDA 12.4" in result.detail and "need CUDA 13" in result.detail
    assert stack.DRIVER_BRANCH in result.fix


class FakeProperties:
    name, total_memory = "Pretend GPU", 80 * GIB


def pretend_gpu(monkeypatch, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: FakeProperties())
    monkeypatch.setattr(stack, "driver_cuda_version", lambda: 13000)
    monkeypatch.setattr(stack, "driver_release", lambda: "580.65.06")


def test_a_visible_gpu_passes_with_name_memory_and_driver(monkeypatch):
    pretend_gpu(monkeypatch, count=2)
    result = run_named("gpu", GPU)
    assert result.status == checks.PASS
    assert result.detail == "2 GPU(s): Pretend GPU 80.0 GiB; Pretend GPU 80.0 GiB; driver 580.65.06 (CUDA 13.0)"


def test_libnvcuvid_missing_fails_naming_nvdec_and_the_fix(monkeypatch):
    def missing():
        raise OSError("libnvcuvid.so.1: cannot open shared object file")
    monkeypatch.setattr(stack, "load_nvcuvid", missing)
    result = run_named("libnvcuvid", GPU)
    assert result.status == checks.FAIL and "libnvcuvid.so.1" in result.detail and "NVDEC" in result.detail
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in result.fix and "data.decode=cpu" in result.fix
    assert run_named("libnvcuvid", checks.Context(decode="cpu", gpu=True)).status == checks.SKIP
    monkeypatch.setattr(stack, "load_nvcuvid", lambda: None)
    assert run_named("libnvcuvid", GPU).status == checks.PASS


# ------------------------------------------------------------ decode, FAME, AMP, NCCL ----
def test_dali_decode_matches_pyav_within_the_tolerance_on_the_cpu_path():
    """The decode check's code path, run with DALI's CPU decoder on VP9 (H.264 needs NVDEC)."""
    dali_shape, pyav_shape, difference = smoke.decode_difference("vp9", "cpu")
    assert dali_shape == pyav_shape == (smoke.DECODE_FRAMES, smoke.DECODE_SIZE, smoke.DECODE_SIZE, 3)
    assert difference <= smoke.MAX_DECODE_MEAN_ABS_DIFF


def test_a_gpu_decode_that_differs_from_pyav_fails(monkeypatch):
    shape = (8, 64, 64, 3)
    monkeypatch.setattr(smoke, "decode_difference", lambda codec, device: (shape, shape, 9.5))
    result = run_named("DALI GPU decode", GPU)
    assert result.status == checks.FAIL and "9.50 levels" in result.detail and "allowed 4.0" in result.detail
    monkeypatch.setattr(smoke, "decode_difference", lambda codec, device: ((7, 64, 64, 3), shape, float("inf")))
    assert "shape (7, 64, 64, 3), PyAV (8, 64, 64, 3)" in run_named("DALI GPU decode", GPU).detail
    monkeypatch.setattr(smoke, "decode_difference", lambda codec, device: (shape, shape, 0.5))
    assert run_named("DALI GPU decode", GPU).status == checks.PASS


def test_fame_agreement_sees_a_backend_that_computes_other_masks():
    """The measure behind "FAME CuPy = NumPy", fed an array library that moves every clip by a few
    pixels on the way in (as a backend that got the masks wrong would): both figures fall below
    the check's bounds."""
    shifting = types.SimpleNamespace(asarray=lambda clips: np.roll(np.asarray(clips), SHIFT_PIXELS, axis=3))
    iou, equal = smoke.fame_agreement(shifting)
    assert iou < smoke.MIN_FAME_MASK_IOU and equal < smoke.MIN_FAME_EQUAL_SHARE


def test_fame_on_cupy_that_differs_from_numpy_fails(monkeypatch):
    monkeypatch.setattr(smoke, "fame_agreement", lambda xp: (0.5, 0.7))
    result = run_named("FAME CuPy = NumPy", GPU)
    assert result.status == checks.FAIL and "smallest mask IoU 0.500 (>= 0.99)" in result.detail
    monkeypatch.setattr(smoke, "fame_agreement", lambda xp: (1.0, 1.0))
    assert run_named("FAME CuPy = NumPy", GPU).status == checks.PASS


def test_amp_check_skips_without_autocast_and_fails_bf16_on_a_gpu_without_it(monkeypatch):
    assert run_named("AMP autocast", checks.Context(amp="none", gpu=True)).status == checks.SKIP
    assert run_named("AMP autocast", checks.Context(amp=None, gpu=True)).status == checks.SKIP
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "Old GPU")
    result = run_named("AMP autocast", GPU)
    assert result.status == checks.FAIL and "Old GPU does not support bfloat16" in result.detail
    assert "train.amp=fp16" in result.fix


def test_nccl_check_runs_only_for_several_processes(monkeypatch):
    assert run_named("NCCL", checks.Context(nproc=1, gpu=True)).status == checks.SKIP
    several = checks.Context(nproc=2, gpu=True)
    assert run_named("NCCL", several).status == checks.PASS
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    result = run_named("NCCL", several)
    assert result.status == checks.FAIL and "no NCCL backend" in result.detail


def test_a_check_that_raises_fails_with_its_fix():
    def broken(context):
        raise RuntimeError("CUDA error: unspecified launch failure")
    result = checks.run_check(checks.Check("broken", broken, "reboot the GPU"), GPU)
    assert checks.format_result(result) == (
        "FAIL  broken                    RuntimeError: CUDA error: unspecified launch failure -- fix: reboot the GPU")


# ------------------------------------------------------------ the command ----
def test_main_exits_1_when_a_check_fails_and_0_otherwise(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHECKS", (checks.Check("fine", lambda c: checks.passed("ok"), "-"),))
    assert doctor_command.main([]) == checks.EXIT_OK
    monkeypatch.setattr(doctor, "CHECKS", (checks.Check("bad", lambda c: checks.failed("broken", "mend it"), "-"),))
    assert doctor_command.main([]) == checks.EXIT_FAILED
    assert "FAIL  bad" in capsys.readouterr().out


def test_quick_runs_only_the_quick_checks(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHECKS", (checks.Check("fast", lambda c: checks.passed("ok"), "-", quick=True),
                                           checks.Check("slow", lambda c: checks.passed("ok"), "-")))
    assert doctor_command.main(["--quick"]) == checks.EXIT_OK
    out = capsys.readouterr().out
    assert "PASS  fast" in out and "slow" not in out


@pytest.mark.parametrize("argv, message", [(["--nproc", "0"], "--nproc must be at least 1"),
                                           (["train.amp=fp8"], "train.amp")])
def test_usage_and_config_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        doctor_command.main(argv)
    assert exit_info.value.code == checks.EXIT_USAGE and message in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_on_this_machine_says_no_gpu_and_the_libraries_pass():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU (the GPU run is test_doctor_passes_on_a_gpu)")
    done = subprocess.run([sys.executable, "-m", "runners.doctor", "--config", "configs/synthetic.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("no CUDA GPU is visible")
    for library in stack.CUDA_LIBRARIES:
        assert f"PASS  load {library.name}" in done.stdout
    assert "PASS  CUDA majors agree" in done.stdout and "SKIP  NVRTC kernel" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_doctor_passes_on_a_gpu(capsys):
    exit_code = doctor_command.main(["--config", "configs/gpu_check.yaml", "--nproc", "2"])
    assert exit_code == checks.EXIT_OK, capsys.readouterr().out
    out = capsys.readouterr().out
    for name in ("gpu", "NVRTC kernel", "libnvcuvid", "DALI GPU decode", "FAME CuPy = NumPy", "AMP autocast", "NCCL"):
        assert f"PASS  {name}" in out


# ------------------------------------------------------------ the preflight ----
@pytest.fixture
def fresh_preflight(monkeypatch):
    monkeypatch.setattr(doctor, "_PREFLIGHT_PASSED", set())
    monkeypatch.delenv(doctor.PREFLIGHT_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def slow_check(context):
    raise AssertionError("the preflight ran a check outside the quick subset")


def test_preflight_stops_a_gpu_run_with_the_failures_and_fixes(monkeypatch, capsys, fresh_preflight):
    pretend_gpu(monkeypatch)
    monkeypatch.setattr(stack, "load_cupy_library", fail_cublas)
    monkeypatch.setattr(doctor, "CHECKS", (check_named("load cuBLAS"), check_named("load cuFFT"),
                                           checks.Check("slow", slow_check, "-")))
    with pytest.raises(SystemExit) as exit_info:
        common.resolve_device("auto", load_config(None, ["train.amp=none"]))
    assert exit_info.value.code == checks.EXIT_USAGE
    err = capsys.readouterr().err
    assert "the GPU stack is not ready, the run did not start (1 check(s) failed)" in err
    assert "FAIL  load cuBLAS" in err and CUBLAS_12_MISSING in err and "fix: run `make setup`" in err
    assert "load cuFFT" not in err and "`make doctor` runs every check" in err


def test_preflight_passes_once_and_can_be_switched_off(monkeypatch, fresh_preflight):
    pretend_gpu(monkeypatch)
    runs = []
    monkeypatch.setattr(doctor, "CHECKS", (checks.Check("counted", lambda c: runs.append(c) or checks.passed("ok"),
                                                        "-", quick=True),))
    assert common.resolve_device("gpu") == torch.device("cuda", 0)
    common.resolve_device("gpu")
    assert len(runs) == 1 and runs[0].gpu and runs[0].amp is None
    broken = checks.Check("bad", lambda c: checks.failed("broken", "-"), "-", quick=True)
    monkeypatch.setattr(doctor, "CHECKS", (broken,))
    monkeypatch.setattr(doctor, "_PREFLIGHT_PASSED", set())
    monkeypatch.setenv(doctor.PREFLIGHT_ENV, "0")
    assert common.resolve_device("gpu") == torch.device("cuda", 0)


def test_preflight_is_not_run_on_the_cpu(monkeypatch, fresh_preflight):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(doctor, "preflight", lambda cfg=None, dali=True: pytest.fail("preflight ran for a CPU run"))
    assert common.resolve_device("auto") == torch.device("cpu")
    assert common.resolve_device("cpu") == torch.device("cpu")


def test_start_run_gives_the_preflight_its_config(monkeypatch, tmp_path, fresh_preflight):
    pretend_gpu(monkeypatch)
    seen = []

    def stop(cfg=None, dali=True):
        seen.append(cfg)
        raise doctor.PreflightFailed("stopped")
    monkeypatch.setattr(doctor, "preflight", stop)
    cfg = load_config(None, [f"run.dir={tmp_path}", "train.amp=fp16"])
    with pytest.raises(SystemExit):
        common.start_run(cfg)
    assert seen == [cfg] and not any(tmp_path.iterdir())


def test_a_run_without_videos_is_not_stopped_for_want_of_dali(monkeypatch, fresh_preflight):
    """bench-trainer reads no videos: its preflight leaves DALI and NVDEC out (the GPU check's first
    stage runs it before DALI is on the machine); a run that reads videos still needs them."""
    pretend_gpu(monkeypatch)
    for module in ("nvidia.dali", "nvidia.dali.backend_impl"):
        monkeypatch.setitem(sys.modules, module, None)              # importing it raises ImportError
    monkeypatch.setattr(stack, "dali_cuda_major", lambda: (_ for _ in ()).throw(ImportError("no DALI")))
    monkeypatch.setattr(stack, "load_nvcuvid", lambda: (_ for _ in ()).throw(OSError("no libnvcuvid")))
    dali_checks = ("dali", "load DALI backend", "CUDA majors agree", "libnvcuvid")
    monkeypatch.setattr(doctor, "CHECKS", tuple(check_named(name) for name in dali_checks))
    without = dataclasses.replace(GPU, dali=False)
    assert {r.name: r.status for r in checks.run_checks(doctor.CHECKS, without)} == {
        "dali": checks.SKIP, "load DALI backend": checks.SKIP, "CUDA majors agree": checks.PASS,
        "libnvcuvid": checks.SKIP}
    assert {r.name: r.status for r in checks.run_checks(doctor.CHECKS, GPU)} == dict.fromkeys(dali_checks, checks.FAIL)
    assert common.resolve_device("gpu", load_config(None, ["train.amp=none"]), dali=False) == torch.device("cuda", 0)
    with pytest.raises(SystemExit):
        common.resolve_device("gpu", load_config(None, ["train.amp=none"]))
