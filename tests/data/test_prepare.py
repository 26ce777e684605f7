"""Each preparer on small annotation files in the official formats, with placeholder video files."""

import json
import os

import pytest

from data.filelist import read_class_names, read_file_list
from data.prepare.benchmarks import prepare_diving48, prepare_hmdb51, prepare_kinetics400, prepare_ucf101
from data.prepare.folder import scan_video_folder, split_by_class

PLACEHOLDER = b"not decoded by the preparers"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER)


def _listed(list_path):
    return [(e.relpath, e.label) for e in read_file_list(list_path)]


@pytest.fixture
def ucf_root(tmp_path):
    root = tmp_path / "ucf"
    notes = root / "ucfTrainTestlist"
    notes.mkdir(parents=True)
    (notes / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    (notes / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
        "YoYo/v_YoYo_g08_c01.avi 3\r\n")
    (notes / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n"
        "HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n"
        "YoYo/v_YoYo_g01_c01.avi\r\n")
    (notes / "trainlist02.txt").write_text("YoYo/v_YoYo_g01_c01.avi 3\n")
    (notes / "testlist02.txt").write_text("YoYo/v_YoYo_g08_c01.avi\n")
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                 "YoYo/v_YoYo_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                 "HandstandPushups/v_HandStandPushups_g01_c01.avi", "YoYo/v_YoYo_g01_c01.avi"):
        _touch(root / "UCF-101" / name)
    return root


def test_ucf101_split1(ucf_root, tmp_path):
    out = tmp_path / "lists"
    report = prepare_ucf101(ucf_root, out, split=1)
    assert read_class_names(out / "classInd.txt") == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert _listed(out / "trainlist.txt") == [
        ("../ucf/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("../ucf/UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
        ("../ucf/UCF-101/YoYo/v_YoYo_g08_c01.avi", 2),
    ]
    assert [label for _, label in _listed(out / "testlist.txt")] == [0, 1, 2]
    assert all(e.path.startswith(str(ucf_root / "UCF-101")) for e in read_file_list(out / "testlist.txt"))
    assert report.counts == {"train": 3, "test": 3} and report.missing == {"train": [], "test": []}


def test_ucf101_other_split_and_missing_videos(ucf_root, tmp_path):
    (ucf_root / "UCF-101" / "YoYo" / "v_YoYo_g08_c01.avi").unlink()
    report = prepare_ucf101(ucf_root, tmp_path / "s2", split=2)
    assert _listed(tmp_path / "s2" / "trainlist.txt") == [("../ucf/UCF-101/YoYo/v_YoYo_g01_c01.avi", 2)]
    assert report.counts["test"] == 0 and len(report.missing["test"]) == 1
    assert "1 missing, left out" in report.summary() and "v_YoYo_g08_c01.avi" in report.summary()
    with pytest.raises(FileNotFoundError, match=r"1 listed videos are missing: .*v_YoYo_g08_c01.avi"):
        prepare_ucf101(ucf_root, tmp_path / "strict", split=2, strict=True)
    assert not (tmp_path / "strict" / "trainlist.txt").exists()


def test_ucf101_bad_annotation_lines(ucf_root, tmp_path):
    notes = ucf_root / "ucfTrainTestlist"
    (notes / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 4\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: .*index in \[1, 3\]"):
        prepare_ucf101(ucf_root, tmp_path / "out")
    (notes / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 3\n")
    (notes / "testlist01.txt").write_text("Juggling/v_Juggling_g01_c01.avi\n")
    with pytest.raises(ValueError, match=r"testlist01.txt:1: .*class from classInd.txt"):
        prepare_ucf101(ucf_root, tmp_path / "out")
    with pytest.raises(ValueError, match="split must be one of"):
        prepare_ucf101(ucf_root, tmp_path / "out", split=4)
    with pytest.raises(FileNotFoundError, match="classInd.txt not found; looked for"):
        prepare_ucf101(tmp_path / "empty", tmp_path / "out")


def test_hmdb51_split_tags(tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    (splits / "wave_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (splits / "brush_hair_test_split1.txt").write_text("b1.avi 2 \nb2.avi 1 \n")
    (splits / "brush_hair_test_split2.txt").write_text("b1.avi 1 \n")
    for name in ("wave/w1.avi", "wave/w2.avi", "wave/w3.avi", "brush_hair/b1.avi"):
        _touch(root / name)
    out = tmp_path / "out"
    report = prepare_hmdb51(root, out, split=1)
    assert read_class_names(out / "classInd.txt") == ["brush_hair", "wave"]
    assert _listed(out / "trainlist.txt") == [("../hmdb/wave/w1.avi", 1)]
    assert _listed(out / "testlist.txt") == [("../hmdb/brush_hair/b1.avi", 0), ("../hmdb/wave/w2.avi", 1)]
    assert [p.split("/")[-1] for p in report.missing["train"]] == ["b2.avi"]
    (splits / "wave_test_split1.txt").write_text("w1.avi 3\n")
    with pytest.raises(ValueError, match=r"wave_test_split1.txt:1: expected 'video.avi 0\|1\|2'"):
        prepare_hmdb51(root, out, split=1)
    with pytest.raises(FileNotFoundError, match="_test_split3.txt"):
        prepare_hmdb51(root, out, split=3)


def test_kinetics400_both_layouts(tmp_path):
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations" / "train.csv").write_text(
        header + "abseiling,--07WQ2iBlw,1,11,train\n"
                 '"passing American football (in game)",-5QqmvpWdhU,23,33,train\n'
                 "abseiling,gone_video1,0,10,train\n")
    (root / "annotations" / "validate.csv").write_text(
        header + "abseiling,a1b2c3d4e5f,15,25,val\n")
    _touch(root / "train" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4")  # per-label folder
    _touch(root / "train" / "passing American football (in game)" / "-5QqmvpWdhU_000023_000033.mp4")
    _touch(root / "val" / "a1b2c3d4e5f_000015_000025.mp4")  # flat folder
    out = tmp_path / "out"
    report = prepare_kinetics400(root, out)
    assert read_class_names(out / "classInd.txt") == ["abseiling", "passing American football (in game)"]
    assert _listed(out / "trainlist.txt") == [
        ("../k400/train/abseiling/--07WQ2iBlw_000001_000011.mp4", 0),
        ("../k400/train/passing American football (in game)/-5QqmvpWdhU_000023_000033.mp4", 1),
    ]
    assert _listed(out / "testlist.txt") == [("../k400/val/a1b2c3d4e5f_000015_000025.mp4", 0)]
    assert report.missing["train"][0].endswith("gone_video1_000000_000010.mp4")


def test_kinetics400_bad_csv(tmp_path):
    root = tmp_path / "k400"
    root.mkdir()
    (root / "train.csv").write_text("label,youtube_id,split\nx,y,train\n")
    (root / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\n")
    with pytest.raises(ValueError, match=r"train.csv: missing columns \['time_start', 'time_end'\]"):
        prepare_kinetics400(root, tmp_path / "out")
    (root / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nx,y,1,11,train\n")
    (root / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nz,y,1,11,val\n")
    with pytest.raises(ValueError, match=r"validate.csv:2: label 'z' does not occur in train.csv"):
        prepare_kinetics400(root, tmp_path / "out")


def test_diving48_with_and_without_vocab(tmp_path):
    root = tmp_path / "diving48"
    root.mkdir()
    train = [{"vid_name": "-mmq0PT-u8k_00155", "label": 1, "start_frame": 0, "end_frame": 48},
             {"vid_name": "gone_00001", "label": 0, "start_frame": 0, "end_frame": 48}]
    test = [{"vid_name": "0Z8mPLMgUjs_00013", "label": 0, "start_frame": 0, "end_frame": 50}]
    (root / "Diving48_V2_train.json").write_text(json.dumps(train))
    (root / "Diving48_V2_test.json").write_text(json.dumps(test))
    _touch(root / "rgb" / "-mmq0PT-u8k_00155.mp4")
    _touch(root / "rgb" / "0Z8mPLMgUjs_00013.mp4")
    out = tmp_path / "out"
    report = prepare_diving48(root, out)
    assert read_class_names(out / "classInd.txt") == ["0", "1"]
    assert _listed(out / "trainlist.txt") == [("../diving48/rgb/-mmq0PT-u8k_00155.mp4", 1)]
    assert _listed(out / "testlist.txt") == [("../diving48/rgb/0Z8mPLMgUjs_00013.mp4", 0)]
    assert report.counts == {"train": 1, "test": 1} and len(report.missing["train"]) == 1

    vocabulary = [["Back", "15som", "05Twis", "FREE"], ["Inward", "25som", "NoTwis", "PIKE"]]
    (root / "Diving48_vocab.json").write_text(json.dumps(vocabulary))
    prepare_diving48(root, out)
    assert read_class_names(out / "classInd.txt") == ["Back_15som_05Twis_FREE", "Inward_25som_NoTwis_PIKE"]

    (root / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "x"}]))
    with pytest.raises(ValueError, match=r"Diving48_V2_test.json: record 0 lacks"):
        prepare_diving48(root, out)


def test_ucf101_train_number_must_match_the_class_folder(ucf_root, tmp_path):
    notes = ucf_root / "ucfTrainTestlist"
    (notes / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 3\nyoyo/v_YoYo_g01_c01.avi 3\n"
                                           "HandstandPushups/v_HandStandPushups_g08_c01.avi 1\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:3: 'HandstandPushups/v_HandStandPushups_g08_c01.avi' "
                                         r"is not in the folder of class 'ApplyEyeMakeup'"):
        prepare_ucf101(ucf_root, tmp_path / "out")
    (notes / "trainlist01.txt").write_text("v_YoYo_g08_c01.avi 3\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: 'v_YoYo_g08_c01.avi' is not in the folder of"):
        prepare_ucf101(ucf_root, tmp_path / "out")


def test_ucf101_annotation_files_with_a_byte_order_mark(ucf_root, tmp_path):
    notes = ucf_root / "ucfTrainTestlist"
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (notes / name).write_bytes(b"\xef\xbb\xbf" + (notes / name).read_bytes())
    report = prepare_ucf101(ucf_root, tmp_path / "out")
    assert report.counts == {"train": 3, "test": 3} and report.class_names[0] == "ApplyEyeMakeup"


def test_lists_written_under_a_symlinked_out_folder_read_back(ucf_root, tmp_path):
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deeper", target_is_directory=True)
    out = tmp_path / "link" / "lists"
    prepare_ucf101(ucf_root, out)
    for name in ("trainlist.txt", "testlist.txt"):
        entries = read_file_list(out / name)
        assert len(entries) == 3 and all(os.path.isfile(e.path) for e in entries)


@pytest.mark.parametrize("name", ["Diving48_V2_train.json", "Diving48_vocab.json"])
def test_diving48_malformed_json_names_the_file(tmp_path, name):
    root = tmp_path / "diving48"
    root.mkdir()
    for split in ("train", "test"):
        (root / f"Diving48_V2_{split}.json").write_text(json.dumps([{"vid_name": "a", "label": 0}]))
    (root / "Diving48_vocab.json").write_text(json.dumps(["only"]))
    (root / name).write_text('[{"vid_name": "a", "label": 0},')
    with pytest.raises(ValueError, match=rf"{name}: not valid JSON: "):
        prepare_diving48(root, tmp_path / "out")


def test_folder_scan_finds_class_folders_and_names_what_it_skips(tmp_path):
    for name in ("walk/b.mp4", "walk/deeper/a.MKV", "walk/notes.txt", "run/x y.webm", ".hidden/z.mp4",
                 "loose.avi", "README.md"):
        _touch(tmp_path / name)
    (tmp_path / "empty").mkdir()
    scan = scan_video_folder(tmp_path)
    assert not scan.unlabelled and list(scan.classes) == ["run", "walk"]
    assert scan.classes["walk"] == [tmp_path / "walk" / "b.mp4", tmp_path / "walk" / "deeper" / "a.MKV"]
    assert sorted(scan.skipped) == ["README.md (not a video by its extension)", "empty/ (no videos)",
                                    "loose.avi (not in a class folder)",
                                    "walk/notes.txt (not a video by its extension)"]


def test_folder_scan_without_class_folders_is_unlabelled(tmp_path):
    for name in ("b.mov", "a.mp4"):
        _touch(tmp_path / name)
    scan = scan_video_folder(tmp_path)
    assert scan.unlabelled and scan.classes == {"": [tmp_path / "a.mp4", tmp_path / "b.mov"]}
    assert scan.splits(0.2, 0) == {"train": [(tmp_path / "a.mp4", 0), (tmp_path / "b.mov", 0)]}


def test_folder_scan_without_videos_names_the_folder(tmp_path):
    _touch(tmp_path / "a" / "notes.txt")
    with pytest.raises(ValueError, match=rf"no videos in {tmp_path}"):
        scan_video_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_video_folder(tmp_path / "nothing")


def _classes(sizes):
    return {f"class{index}": [f"class{index}/v{n:02d}.mp4" for n in range(size)] for index, size in enumerate(sizes)}


def test_split_by_class_is_stratified_and_seeded():
    classes = _classes([10, 5, 2, 1])
    splits = split_by_class(classes, 0.2, seed=0)
    for label, videos in enumerate(classes.values()):
        train = [path for path, lab in splits["train"] if lab == label]
        test = [path for path, lab in splits["test"] if lab == label]
        assert sorted(train + test) == videos
        assert len(test) == {10: 2, 5: 1, 2: 1, 1: 0}[len(videos)]
    assert split_by_class(classes, 0.2, seed=0) == splits
    assert split_by_class(classes, 0.2, seed=1)["test"] != splits["test"]


def test_a_class_split_does_not_depend_on_the_other_classes():
    alone = split_by_class({"class0": _classes([10])["class0"]}, 0.3, seed=4)
    together = split_by_class(_classes([10, 7]), 0.3, seed=4)
    assert [item for item in together["test"] if item[1] == 0] == alone["test"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_by_class_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match="--val-fraction must lie in"):
        split_by_class(_classes([3]), fraction, seed=0)
