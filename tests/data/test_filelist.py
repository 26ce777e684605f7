import os
from pathlib import Path

import pytest

from data.filelist import Entry, check_labels, read_class_names, read_file_list, write_class_names, write_file_list


def test_round_trip_resolves_paths_against_the_list_directory(tmp_path):
    list_path = tmp_path / "lists" / "train.txt"
    written = write_file_list(list_path, [("a/clip one.webm", 0), ("b/clip2.webm", 3)])
    assert written == 2
    assert list_path.read_text() == "a/clip one.webm 0\nb/clip2.webm 3\n"
    entries = read_file_list(list_path)
    assert entries == [
        Entry(str(tmp_path / "lists" / "a" / "clip one.webm"), 0, "a/clip one.webm"),
        Entry(str(tmp_path / "lists" / "b" / "clip2.webm"), 3, "b/clip2.webm"),
    ]


def test_explicit_root_and_relative_parent_paths(tmp_path):
    list_path = tmp_path / "out" / "list.txt"
    write_file_list(list_path, [("../videos/x.webm", 1)])
    assert read_file_list(list_path)[0].path == str(tmp_path / "videos" / "x.webm")
    assert read_file_list(list_path, root=tmp_path / "elsewhere")[0].path == str(tmp_path / "videos" / "x.webm")
    write_file_list(list_path, [("x.webm", 1)])
    assert read_file_list(list_path, root="/data")[0].path == os.path.normpath("/data/x.webm")


def test_blank_lines_comments_and_tabs_are_accepted(tmp_path):
    list_path = tmp_path / "l.txt"
    list_path.write_text("# header\n\n  a b/c.webm\t2  \r\n")
    assert [(e.relpath, e.label) for e in read_file_list(list_path)] == [("a b/c.webm", 2)]


@pytest.mark.parametrize("line, fragment", [
    ("only_a_path.webm", "expected 'relative/path label'"),
    ("clip.webm one", "is not an integer"),
    ("clip.webm -1", "negative label -1"),
    ("clip.webm 1.5", "is not an integer"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, fragment):
    list_path = tmp_path / "bad.txt"
    list_path.write_text(f"ok.webm 0\n{line}\n")
    with pytest.raises(ValueError, match=fragment) as info:
        read_file_list(list_path)
    assert f"{list_path}:2" in str(info.value)


def test_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_file_list(tmp_path / "nope.txt")


def test_write_rejects_bad_entries(tmp_path):
    with pytest.raises(ValueError, match="negative label"):
        write_file_list(tmp_path / "l.txt", [("a.webm", -2)])
    with pytest.raises(ValueError, match="cannot write path"):
        write_file_list(tmp_path / "l.txt", [(" padded.webm", 0)])


def test_class_names_round_trip_with_spaces(tmp_path):
    path = tmp_path / "classInd.txt"
    write_class_names(path, ["ApplyEyeMakeup", "passing American football (in game)"])
    assert path.read_text() == "1 ApplyEyeMakeup\n2 passing American football (in game)\n"
    assert read_class_names(path) == ["ApplyEyeMakeup", "passing American football (in game)"]


def test_class_names_out_of_order_or_malformed(tmp_path):
    path = tmp_path / "classInd.txt"
    path.write_text("1 a\r\n3 c\r\n")
    with pytest.raises(ValueError, match=r"classInd.txt:2: class index 3 out of order, expected 2"):
        read_class_names(path)
    path.write_text("one a\n")
    with pytest.raises(ValueError, match="expected 'index name'"):
        read_class_names(path)


def test_check_labels_names_list_entry_and_num_classes(tmp_path):
    entries = [Entry("/x/a.webm", 0, "a.webm"), Entry("/x/b.webm", 5, "b.webm"), Entry("/x/c.webm", 7, "c.webm")]
    check_labels(entries, 8, "train.txt")
    with pytest.raises(ValueError) as info:
        check_labels(entries, 5, "train.txt")
    message = str(info.value)
    assert "train.txt" in message and "num_classes=5" in message
    assert "2 entries" in message and "entry 2 'b.webm' label 5" in message
    check_labels([("a.webm", 1)], 2, "plain tuples")


def test_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    list_path = tmp_path / "l.txt"
    list_path.write_bytes("\ufeffa/clip.webm 0\nb.webm 1\n".encode("utf-8"))
    assert [(e.relpath, e.label) for e in read_file_list(list_path)] == [("a/clip.webm", 0), ("b.webm", 1)]
    names = tmp_path / "classInd.txt"
    names.write_bytes("\ufeff1 first\n2 second\n".encode("utf-8"))
    assert read_class_names(names) == ["first", "second"]


def test_parent_paths_climb_out_of_a_symlinked_list_folder_as_written(tmp_path):
    (tmp_path / "real" / "deeper").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deeper", target_is_directory=True)
    list_path = tmp_path / "link" / "list.txt"
    write_file_list(list_path, [("../videos/x.webm", 0)])
    assert read_file_list(list_path)[0].path == str(tmp_path / "videos" / "x.webm")


def test_a_symlinked_list_file_reads_beside_the_file_it_links_to(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    write_file_list(tmp_path / "real" / "list.txt", [("v.webm", 0)])
    (tmp_path / "other" / "list.txt").symlink_to(Path("..") / "real" / "list.txt")
    assert read_file_list(tmp_path / "other" / "list.txt")[0].path == str(tmp_path / "real" / "v.webm")
