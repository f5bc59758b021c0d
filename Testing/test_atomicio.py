"""Atomic output: complete or absent, never half-written."""

import pytest

from KneeAlignmentLib.atomicio import atomic_output, write_atomic


def test_write_text_and_bytes(tmp_path):
    assert write_atomic(tmp_path / "a.json", "{}\n").read_text() == "{}\n"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_atomic(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_temporary_is_hidden_and_keeps_the_suffix(tmp_path):
    with atomic_output(tmp_path / "overlay.png") as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".overlay.") and temporary.suffix == ".png"
        assert not (tmp_path / "overlay.png").exists()
        temporary.write_bytes(b"png")
    assert (tmp_path / "overlay.png").read_bytes() == b"png"


def test_unwritable_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing" / "x.json", "{}")
