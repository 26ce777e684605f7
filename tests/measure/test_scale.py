"""measure.scale: a long list of links to a few videos, and the start-up it times."""
import json
import os

import pytest

from data.filelist import read_file_list
from measure import scale
from tests.conftest import ROOT

TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
ENTRIES = 40


def test_links_make_a_list_of_distinct_paths_to_the_videos_in_turn(tiny_data_root, tmp_path):
    sources = read_file_list(os.path.join(tiny_data_root, "trainlist.txt"))
    assert scale.main(["links", "--list", os.path.join(tiny_data_root, "trainlist.txt"), "--entries", str(ENTRIES),
                       "--out", str(tmp_path)]) == 0
    entries = read_file_list(tmp_path / "trainlist.txt")
    assert len({entry.path for entry in entries}) == ENTRIES
    for number, entry in enumerate(entries):
        source = sources[number % len(sources)]
        assert os.path.realpath(entry.path) == os.path.realpath(source.path) and entry.label == source.label


@pytest.mark.slow
def test_startup_times_every_part_and_writes_them(tiny_data_root, tmp_path, capsys):
    scale.main(["links", "--list", os.path.join(tiny_data_root, "trainlist.txt"), "--entries", str(ENTRIES),
                "--out", str(tmp_path / "links")])
    out = tmp_path / "startup.json"
    assert scale.main(["startup", "--config", TINY, f"data.root={tmp_path / 'links'}", "data.synthetic=null",
                       "wandb.mode=disabled", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["videos"] == ENTRIES and len(result["parts"]) == 5
    assert all(part["seconds"] >= 0 and part["rss_mib"] > 0 for part in result["parts"])
    assert "the pipelines and the first batch" in capsys.readouterr().out
