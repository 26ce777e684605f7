"""Session-wide fixtures: the tiny synthetic dataset, made once and shared."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """configs/synthetic_tiny.yaml's dataset (VP9 webm, 4 classes), generated once per session."""
    from data.synthetic import ensure_dataset
    from engine.config import load_config
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic_tiny.yaml"))
    root = str(tmp_path_factory.mktemp("synthetic_tiny"))
    ensure_dataset(root, cfg.data.synthetic)
    return root
