import dataclasses
import glob
import os
import subprocess
import sys
import typing

import pytest
import yaml

from engine import config as C
from engine.config import PRETRAIN, PROBE, resume_keys, resumes

REPOSITORY = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "*.yaml")))


def write(tmp_path, name, tree):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_defaults_are_the_published_recipe():
    cfg = C.load_config(None)
    assert (cfg.fame.beta, cfg.fame.variant, cfg.fame.background, cfg.fame.branches) == (0.5, "fame", "inter", "one")
    assert (cfg.model.dim, cfg.model.m, cfg.model.T) == (128, 0.999, 0.1)
    assert (cfg.clip.frames, cfg.clip.stride) == (16, 2)
    assert cfg.aug.mean == (0.43216, 0.394666, 0.37645)
    # beyond the paper, off by default: no predictor, no batch norm in the head, own keys kept
    assert (cfg.model.head, cfg.model.predictor_dim, cfg.model.drop_own_keys) == ("mlp", 0, False)


PAPER_PREFIXES = ("ucf101_", "k400_", "hmdb51_", "diving48_")


@pytest.mark.parametrize("path", [p for p in CONFIGS if os.path.basename(p).startswith(PAPER_PREFIXES)],
                         ids=os.path.basename)
def test_the_paper_configs_keep_the_published_moco(path):
    cfg = C.load_config(path)
    assert (cfg.model.predictor_dim, cfg.model.drop_own_keys, cfg.model.batch_negatives) == (0, False, False)
    assert cfg.model.head in ("mlp", "linear") and cfg.train.optimizer == "sgd"


def test_schema_holds_the_library_settings_classes_themselves():
    """fame, aug and data.synthetic are FameConfig, AugParams and SyntheticSpec, not copies:
    the default experiment is the library's defaults."""
    from data.spec import SyntheticSpec
    from fame import FameConfig
    from pipelines.params import AugParams
    cfg = C.load_config(None, ["data.synthetic={}"])
    assert type(cfg.fame) is FameConfig and cfg.fame == FameConfig()
    assert type(cfg.aug) is AugParams and cfg.aug == AugParams()
    assert type(cfg.data.synthetic) is SyntheticSpec and cfg.data.synthetic == SyntheticSpec()


def test_loading_a_config_imports_no_heavy_library():
    script = ("import sys; from engine.config import load_config; load_config('configs/synthetic.yaml'); "
              "heavy = [m for m in ('torch', 'nvidia.dali', 'av', 'skimage', 'cupy') if m in sys.modules]; "
              "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPOSITORY)


def test_synthetic_codecs_are_the_video_codecs():
    from data.spec import SyntheticSpec
    from data.video_io import CODECS
    assert sorted(typing.get_args(typing.get_type_hints(SyntheticSpec)["codec"])) == sorted(CODECS)


def test_derived_fields_are_no_config_keys(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown config key 'fame.steps_per_epoch'"):
        C.load_config(None, ["fame.steps_per_epoch=3"])
    assert "steps_per_epoch" not in C.to_dict(C.load_config(None))["fame"]


def test_settings_without_a_former_config_key_are_keys_now():
    cfg = C.load_config(None, ["aug.antialias=true", "aug.blur_window_fraction=0.2", "fame.bins=12",
                               "data.synthetic={gop: 4}"])
    got = (cfg.aug.antialias, cfg.aug.blur_window_fraction, cfg.fame.bins, cfg.data.synthetic.gop)
    assert got == (True, 0.2, 12, 4)


def test_a_saved_run_config_of_the_former_schema_loads(tmp_path):
    """config.yaml of runs saved before the schema held the settings classes: the same keys."""
    tree = {"fame": {"beta": 0.3, "variant": "fame", "background": "inter", "branches": "one", "hue": "published",
                     "pick": "derangement", "beta_min": 0.3, "beta_max": 0.7, "camera_compensation": "none",
                     "beta_warmup_epochs": 0.0},
            "aug": {"crop_area": [0.2, 1.0], "crop_aspect": [0.75, 1.3333333333333333], "flip_p": 0.5,
                    "grayscale_p": 0.2, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
                    "hue": 0.1, "blur_p": 0.5, "blur_sigma": [0.1, 2.0], "mean": [0.43216, 0.394666, 0.37645],
                    "std": [0.22803, 0.22145, 0.216989]}}
    cfg = C.load_config(write(tmp_path, "config.yaml", tree))
    assert cfg.fame.beta == 0.3 and cfg.fame.camera_compensation == "none" and cfg.aug.crop_aspect == (0.75, 4 / 3)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_loads(path):
    cfg = C.load_config(path)
    assert cfg.source.endswith(os.path.basename(path))


def test_inheritance_deep_merges_and_child_wins(tmp_path):
    write(tmp_path, "base.yaml", {"train": {"epochs": 7, "lr": 0.5}, "fame": {"beta": 0.3}})
    child = write(tmp_path, "child.yaml", {"inherit": "base.yaml", "train": {"epochs": 3}})
    cfg = C.load_config(child)
    assert (cfg.train.epochs, cfg.train.lr, cfg.fame.beta) == (3, 0.5, 0.3)


def test_multiple_parents_apply_in_order(tmp_path):
    write(tmp_path, "a.yaml", {"seed": 1, "train": {"epochs": 1}})
    write(tmp_path, "b.yaml", {"seed": 2})
    child = write(tmp_path, "c.yaml", {"inherit": ["a.yaml", "b.yaml"]})
    cfg = C.load_config(child)
    assert (cfg.seed, cfg.train.epochs) == (2, 1)


def test_overrides_parse_yaml_values_and_win_over_files(tmp_path):
    child = write(tmp_path, "x.yaml", {"fame": {"beta": 0.3}})
    cfg = C.load_config(child, ["fame.beta=auto", "train.epochs=2", "eval.ks=[1,3]", "model.checkpoint=null",
                                "fame.camera_compensation=phase"])
    assert cfg.fame.beta == "auto" and cfg.train.epochs == 2 and cfg.eval.ks == [1, 3]
    assert cfg.model.checkpoint is None and cfg.fame.camera_compensation == "phase"


def test_float_fields_accept_exponents_that_yaml_reads_as_text(tmp_path):
    cfg = C.load_config(None, ["train.weight_decay=1e-4", "fame.beta=5e-1", "eval.lr=2.5E-2"])
    assert (cfg.train.weight_decay, cfg.fame.beta, cfg.eval.lr) == (1e-4, 0.5, 0.025)
    assert C.load_config(write(tmp_path, "x.yaml", {"train": {"lr": "3e-3"}})).train.lr == 0.003
    with pytest.raises(C.ConfigError, match=r"'fame.beta': 2.0 is outside"):
        C.load_config(None, ["fame.beta=2e0"])
    with pytest.raises(C.ConfigError, match="'model.symmetric'"):
        C.load_config(None, ["model.symmetric=1e0"])


def test_model_backbone_choices_are_the_registered_backbones():
    from models.backbones import backbone_names
    assert sorted(typing.get_args(typing.get_type_hints(C.ModelConfig)["backbone"])) == backbone_names()
    for name in backbone_names():
        assert C.load_config(None, [f"model.backbone={name}"]).model.backbone == name


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert C.load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(C.ConfigError, match="'train.epochs'"):
        C.load_config(None, ["train.epochs=1.5"])


@pytest.mark.parametrize("override, message", [
    ("fame.beta=1.5", r"'fame.beta': 1.5 is outside the allowed range \[0.0, 1.0\]"),
    ("fame.beta=-0.1", r"'fame.beta'.*outside"),
    ("fame.beta=half", r"'fame.beta'.*expected float or one of 'auto'"),
    ("train.epochs=-1", r"'train.epochs': -1 is outside the allowed range \[0, inf\]"),
    ("fame.variant=blob", r"'fame.variant'.*one of 'fame', 'seed', 'grid', 'gauss', 'none'"),
    ("fame.background=outer", r"'fame.background'.*'inter', 'intra', 'none'"),
    ("device=tpu", r"'device'.*'auto', 'cpu', 'gpu'"),
    ("wandb.mode=cloud", r"'wandb.mode'.*'offline', 'online', 'disabled'"),
    ("train.lr=0", r"'train.lr'.*\(0.0, inf\]"),
    ("train.batch_size=0", r"'train.batch_size'"),
    ("train.amp=yes", r"'train.amp'"),
    ("fame.camera_compensation=1", r"'fame.camera_compensation'.*'none', 'median', 'phase'"),
    ("aug.mean=[0.5,0.5]", r"'aug.mean'.*length 3"),
    ("train.trian=3", r"unknown config key 'train.trian'; allowed keys under 'train':.*epochs"),
    ("bogus=1", r"unknown config key 'bogus'"),
    ("fame=3", r"'fame': expected a mapping"),
    ("fame.beta_min=0.9", r"beta_min must not exceed beta_max"),
    ("aug.crop_area=[0.5,0.2]", r"'aug.crop_area'"),
    ("train.resume=/no/such/ckpt.pt", r"'train.resume'.*/no/such/ckpt.pt"),
    ("noequals", r"expected key=value"),
    ("eval.unbiased_probe=true", r"'eval.unbiased_probe'.*data.synthetic"),
    ("eval.ks=[0,5]", r"'eval.ks\[0\]': 0 is outside the allowed range \[1, inf\]"),
    ("eval.ks=[1,-5]", r"'eval.ks\[1\]'.*outside"),
    ("model.backbone=resnet9000", r"'model.backbone': got 'resnet9000', expected one of 'i3d', .*'small3d'"),
    ("train.weight_decay=1e-4x", r"'train.weight_decay'.*expected float"),
    ("train.lr=nan", r"'train.lr'.*expected float"),
    ("train.epochs=1e2", r"'train.epochs'.*expected int"),
    ("data.decode=nvdec", r"'data.decode'.*'auto', 'gpu', 'cpu'"),
    ("aug.crop_area=[0.5,1.5]", r"'aug.crop_area\[1\]': 1.5 is outside the allowed range \(0.0, 1.0\]"),
    ("aug.blur_sigma=[2.0,1.0]", r"'aug.blur_sigma': need \(min, max\) with min <= max"),
    ("aug.std=[0.2,0.2,0]", r"'aug.std\[2\]'.*outside"),
    ("fame.grid_keep=17", r"'fame.grid_keep'.*grid_cells"),
    ("fame.bins=1", r"'fame.bins': 1 is outside the allowed range \[2, inf\]"),
    ("fame.beta_warmup_epochs=-1", r"'fame.beta_warmup_epochs'.*outside"),
    ("data.synthetic={width: 63}", r"'data.synthetic.width'.*even"),
    ("data.synthetic={codec: av1}", r"'data.synthetic.codec'.*'h264', 'mjpeg', 'vp9'"),
    ("data.synthetic=3", r"'data.synthetic': got 3, expected SyntheticSpec or null"),
    ("model.pool=sum", r"'model.pool'.*'avg', 'max'"),
    ("model.head=bn", r"'model.head'.*'mlp', 'linear', 'mlp_bn'"),
    ("model.predictor_dim=-1", r"'model.predictor_dim': -1 is outside the allowed range \[0, inf\]"),
    ("model.drop_own_keys=maybe", r"'model.drop_own_keys'"),
    ("train.optimizer=adam", r"'train.optimizer'.*'sgd', 'adamw'"),
    ("eval.optimizer=lamb", r"'eval.optimizer'.*'sgd', 'adamw'"),
])
def test_validation_errors_name_the_key(override, message):
    with pytest.raises(C.ConfigError, match=message):
        C.load_config(None, [override])


def test_only_small3d_has_a_choice_of_pool():
    assert C.load_config(None, ["model.pool=max"]).model.pool == "max"
    with pytest.raises(C.ConfigError, match=r"'model.pool' \(max\): only small3d.*r2plus1d_18 averages"):
        C.load_config(None, ["model.backbone=r2plus1d_18", "model.pool=max"])


def test_unbiased_probe_refuses_absolute_lists():
    synthetic = "data.synthetic={num_classes: 4}"
    assert C.load_config(None, [synthetic, "eval.unbiased_probe=true"]).eval.unbiased_probe
    with pytest.raises(C.ConfigError, match="'eval.unbiased_probe'.*relative"):
        C.load_config(None, [synthetic, "eval.unbiased_probe=true", "data.train_list=/abs/train.txt"])


def test_decode_defaults_to_auto_and_gpu_decoding_needs_a_gpu_run():
    assert C.load_config(None).data.decode == "auto"
    assert C.load_config(None, ["device=gpu", "data.decode=cpu"]).data.decode == "cpu"
    assert C.load_config(None, ["device=auto", "data.decode=gpu"]).data.decode == "gpu"
    with pytest.raises(C.ConfigError, match="'device' \\(cpu\\) and 'data.decode' \\(gpu\\).*auto or cpu"):
        C.load_config(None, ["device=cpu", "data.decode=gpu"])


def test_unknown_key_in_a_file_names_it(tmp_path):
    path = write(tmp_path, "bad.yaml", {"clip": {"frame": 8}})
    with pytest.raises(C.ConfigError, match="unknown config key 'clip.frame'"):
        C.load_config(path)


def test_missing_parent_and_cycles_are_reported(tmp_path):
    with pytest.raises(C.ConfigError, match="nope.yaml' does not exist"):
        C.load_config(write(tmp_path, "a.yaml", {"inherit": "nope.yaml"}))
    write(tmp_path, "p.yaml", {"inherit": "q.yaml"})
    with pytest.raises(C.ConfigError, match="inherit cycle"):
        C.load_config(write(tmp_path, "q.yaml", {"inherit": "p.yaml"}))


def test_dumped_config_reads_back_equal(tmp_path):
    cfg = C.load_config("configs/synthetic.yaml", ["fame.beta=0.3", "run.name=x"])
    C.dump_config(cfg, str(tmp_path / "config.yaml"))
    assert C.load_config(str(tmp_path / "config.yaml")).fame == cfg.fame
    again = C.build_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_run_name_from_config_stem_and_time():
    import datetime
    cfg = C.load_config("configs/synthetic.yaml")
    assert C.run_name(cfg, datetime.datetime(2026, 1, 2, 3, 4, 5)) == "synthetic-20260102-030405"
    assert C.run_name(C.load_config(None, ["run.name=mine"])) == "mine"


BASES = {"downstream.yaml", "pretrain.yaml"}   # shared recipes, inherited, never run alone


def test_every_experiment_has_a_tiny_cpu_variant():
    names = {os.path.basename(p) for p in CONFIGS}
    experiments = {n for n in names if not n.endswith("_tiny.yaml")} - BASES
    missing = sorted(n for n in experiments if n.replace(".yaml", "_tiny.yaml") not in names)
    assert not missing, f"configs without a _tiny.yaml CPU variant: {missing}"
    for n in names:
        if n.endswith("_tiny.yaml"):
            cfg = C.load_config(os.path.join(os.path.dirname(CONFIGS[0]), n))
            assert cfg.device == "cpu" and cfg.model.backbone == "small3d", n


def test_long_benchmark_trains_on_the_benchmark_training_split():
    """benchmark_long.yaml changes the schedule, the recipe (it keeps the one its figures were
    measured with) and the test-split size only, so its backbones are pretrained on
    benchmark.yaml's very training videos (docs/benchmarks.md)."""
    short, long = C.load_config("configs/benchmark.yaml"), C.load_config("configs/benchmark_long.yaml")
    assert (long.train.epochs, long.fame.beta) == (24 * short.train.epochs, 0.5)
    assert long.data.synthetic.videos_per_class_test == 4 * short.data.synthetic.videos_per_class_test
    assert long.data.root != short.data.root
    same_train = dataclasses.replace(long.data.synthetic,
                                     videos_per_class_test=short.data.synthetic.videos_per_class_test)
    assert same_train == short.data.synthetic
    recipe = {name: getattr(short, name) for name in ("train", "fame", "clip", "aug", "model")}
    assert dataclasses.replace(long, data=short.data, source=short.source, **recipe) == short


def test_the_resume_keys_are_the_marked_fields_of_the_schema():
    """What a resumed run must share with its checkpoint is marked on the schema's fields (a section:
    all of it), so a new key cannot be left out of a list kept elsewhere."""
    pretrain, probe = resume_keys(PRETRAIN), resume_keys(PROBE)
    assert {"seed", "data.root", "data.train_list", "clip", "fame", "aug", "model", "train.lr", "train.epochs",
            "train.batch_size", "train.optimizer", "train.schedule"} <= set(pretrain)
    assert {"seed", "data.root", "data.num_classes", "clip", "aug", "model.backbone", "eval.protocol", "eval.lr",
            "eval.epochs"} <= set(probe)
    # what may change on a resume: logging, checkpointing, device, AMP, the pipelines' threads, the test list
    free = {"device", "train.amp", "train.log_every", "train.checkpoint_every", "train.num_threads",
            "train.pipelines", "train.prefetch", "wandb", "run", "data.val_list", "data.decode", "eval.clips_per_video"}
    assert not free & set(pretrain) and not free & set(probe)
    assert "fame" not in probe and "model" not in probe and "eval.protocol" not in pretrain


def test_a_section_marked_for_a_job_stands_for_every_key_in_it():
    @dataclasses.dataclass
    class Inner:
        a: int = 0
        b: int = dataclasses.field(default=0, metadata=resumes("job"))

    @dataclasses.dataclass
    class Outer:
        whole: Inner = dataclasses.field(default_factory=Inner, metadata=resumes("job"))
        part: Inner = dataclasses.field(default_factory=Inner)
        free: int = 0

    assert resume_keys("job", Outer) == ("whole", "part.b")
    assert resume_keys("other", Outer) == ()


CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


def test_make_pretrain_runs_the_demo_and_the_demo_says_what_to_compare_against():
    makefile = open(os.path.join(CONFIG_DIR, "..", "Makefile")).read()
    assert "configs/demo.yaml)" in makefile.split("PRETRAIN_CONFIG =")[1].splitlines()[0]
    cfg = C.load_config(os.path.join(CONFIG_DIR, "demo.yaml"), [])
    ref = cfg.reference
    assert None not in (ref.moco_top1, ref.fame_top1, ref.control_top1) and ref.note
    assert 100 / cfg.data.num_classes < ref.moco_top1 < ref.fame_top1 <= ref.control_top1


def test_the_long_benchmark_keeps_the_recipe_its_figures_were_measured_with():
    long = C.load_config(os.path.join(CONFIG_DIR, "benchmark_long.yaml"), [])
    short = C.load_config(os.path.join(CONFIG_DIR, "benchmark.yaml"), [])
    earlier = (long.train.optimizer, long.train.lr, long.model.pool, long.model.T, long.model.predictor_dim,
               long.aug.jitter_p, long.aug.grayscale_p, long.clip.stride)
    assert earlier == ("sgd", 0.05, "avg", 0.1, 0, 0.8, 0.2, 2)
    assert (short.train.optimizer, short.model.pool, short.model.predictor_dim, short.clip.stride) == ("adamw", "max",
                                                                                                      256, 4)


def test_the_small_object_benchmark_takes_the_short_run_recipe():
    """configs/small_objects.yaml shares the large-object benchmark's recipe (docs/learning.md,
    small actors), and its supervised control sees the same clips."""
    def recipe(c):
        return (c.train.optimizer, c.train.lr, c.model.pool, c.model.T, c.model.predictor_dim, c.aug.jitter_p,
                c.aug.grayscale_p, c.clip.stride)
    small = C.load_config(os.path.join(CONFIG_DIR, "small_objects.yaml"), [])
    assert recipe(small) == recipe(C.load_config(os.path.join(CONFIG_DIR, "benchmark.yaml"), []))
    assert (small.fame.variant, small.fame.beta) == ("seed", 0.3)
    assert C.load_config(os.path.join(CONFIG_DIR, "small_objects_control.yaml"), []).clip == small.clip
