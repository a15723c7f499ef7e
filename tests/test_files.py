"""remove_tree: the cleanup of trees a student wrote cannot fail, however deep or odd they are."""

from __future__ import annotations

import os

from autograder.files import remove_tree


def test_remove_tree_removes_a_chain_deeper_than_recursion_and_path_limits(tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    here = os.open(root, os.O_RDONLY)
    for _ in range(1500):  # 1500 x 200 characters: far beyond PATH_MAX and Python's recursion limit
        os.mkdir("d" * 200, dir_fd=here)
        below = os.open("d" * 200, os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = below
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=here), "w") as f:
        f.write("x")
    os.close(here)
    assert remove_tree(root) == []
    assert not root.exists()


def test_remove_tree_never_follows_links_and_opens_locked_folders(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    root = tmp_path / "work"
    (root / "locked" / "inner").mkdir(parents=True)
    (root / "locked" / "inner" / "f").write_text("x")
    (root / "link").symlink_to(outside)
    (root / "locked" / "link").symlink_to(outside / "keep.txt")
    os.chmod(root / "locked" / "inner", 0)
    os.chmod(root / "locked", 0)
    assert remove_tree(root) == []
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "mine"


def test_remove_tree_of_nothing_or_a_file(tmp_path):
    assert remove_tree(tmp_path / "missing") == []
    (tmp_path / "file").write_text("x")
    assert remove_tree(tmp_path / "file") == []
    assert not (tmp_path / "file").exists()
