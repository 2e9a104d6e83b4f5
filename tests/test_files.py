"""probinv._files.atomic_path: complete files or nothing, with ordinary permissions."""
import os
import stat

import pytest

from probinv._files import atomic_path


def test_atomic_path_renames_on_success_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "result.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        tmp.write_text("done")
    assert target.read_text() == "done"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert os.listdir(target.parent) == ["result.txt"]  # no temporary file left behind


def test_atomic_path_keeps_the_old_file_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_write_text_atomic_creates_the_folder_and_the_file(tmp_path):
    from probinv._files import write_text_atomic

    target = tmp_path / "results" / "table.md"
    write_text_atomic(target, "| a |\n")
    assert target.read_text() == "| a |\n" and os.listdir(target.parent) == ["table.md"]
