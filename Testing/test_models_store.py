"""Tests of KneeAlignmentLib.models_store: verified import of model bundles into the user's models folder."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from KneeAlignmentLib.bundle import WEIGHTS_FILE
from KneeAlignmentLib.errors import BundleError
from KneeAlignmentLib.models_store import (
    BundleConflict,
    default_user_models_dir,
    import_models,
    model_paths,
)
from KneeAlignmentLib.pipeline import ModelSet
from model_factory import save_models


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A released models folder: global/, local_preop/, local_postop/."""
    return save_models(tmp_path_factory.mktemp("released"), seed=0)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory) -> Path:
    """Other weights for the same roles (an in-house retraining)."""
    return save_models(tmp_path_factory.mktemp("retrained"), seed=5)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_models_folder_is_installed_and_loads(tmp_path, released):
    user = tmp_path / "user"
    imported = import_models(released, user)
    assert [(e.role, e.status) for e in imported] == [("global", "installed"), ("preop", "installed"),
                                                      ("postop", "installed")]
    assert imported[1].model_id == "tiny-preop@0.0.1" and imported[1].path == user / "local_preop"
    for role in ("global", "local_preop", "local_postop"):
        assert files(user / role) == files(released / role)
    assert sorted(p.name for p in user.iterdir()) == ["global", "local_postop", "local_preop"]  # no staging left
    models = ModelSet.load(model_paths(user, tmp_path / "shipped"), device="cpu")
    assert models.kinds == ("preop", "postop")


def test_a_single_bundle_and_a_zip_with_a_top_folder(tmp_path, released):
    user = tmp_path / "user"
    [entry] = import_models(released / "local_postop", user)
    assert (entry.role, entry.status) == ("postop", "installed")
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(released.rglob("*")):
            if path.is_file():
                zf.write(path, f"release-1/{path.relative_to(released).as_posix()}")
    statuses = {e.role: e.status for e in import_models(archive, user)}
    assert statuses == {"global": "installed", "preop": "installed", "postop": "already installed"}


def test_role_by_role_fallback_to_the_shipped_models(tmp_path, released, retrained):
    user = tmp_path / "user"
    import_models(retrained / "local_postop", user)
    paths = model_paths(user, released)
    assert paths == {"global": released / "global", "preop": released / "local_preop", "postop": user / "local_postop"}
    with pytest.raises(BundleError, match="no global model"):
        model_paths(user, tmp_path / "nothing")
    only_global = tmp_path / "only-global"
    import_models(released / "global", only_global)
    with pytest.raises(BundleError, match="no local model"):
        model_paths(only_global, None)


def test_a_differing_installed_model_is_replaced_only_when_asked(tmp_path, released, retrained):
    user = tmp_path / "user"
    import_models(released, user)
    before = files(user / "local_preop")
    with pytest.raises(BundleConflict, match="holds another preop model; nothing was changed") as caught:
        import_models(retrained / "local_preop", user)
    assert caught.value.role == "preop" and caught.value.installed == user / "local_preop"
    assert files(user / "local_preop") == before
    [entry] = import_models(retrained / "local_preop", user, replace=True)
    assert entry.status == "replaced"
    assert files(user / "local_preop") == files(retrained / "local_preop")
    assert sorted(p.name for p in user.iterdir()) == ["global", "local_postop", "local_preop"]


def test_tampered_weights_are_refused_and_nothing_is_installed(tmp_path, released):
    source = tmp_path / "tampered"
    shutil.copytree(released, source)
    weights = source / "local_preop" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    user = tmp_path / "user"
    with pytest.raises(BundleError, match="checksum mismatch"):
        import_models(source, user)
    assert list(user.iterdir()) == []


def test_unsafe_or_empty_sources_are_refused(tmp_path, released):
    user = tmp_path / "user"
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(BundleError, match="unsafe entry '../outside.txt'"):
        import_models(slip, user)
    assert not (tmp_path / "outside.txt").exists()
    linked = tmp_path / "linked"
    shutil.copytree(released / "global", linked / "global")
    os.symlink(released / "local_preop", linked / "local_preop")
    with pytest.raises(BundleError, match="contains links"):
        import_models(linked, user)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no model bundle inside"):
        import_models(tmp_path / "empty", user)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(BundleError, match="neither a folder nor a .zip"):
        import_models(tmp_path / "notes.txt", user)
    with pytest.raises(BundleError, match="not found"):
        import_models(tmp_path / "absent", user)
    twice = tmp_path / "twice"
    shutil.copytree(released / "global", twice / "a")
    shutil.copytree(released / "global", twice / "b")
    with pytest.raises(BundleError, match="two global models"):
        import_models(twice, user)
    assert list(user.iterdir()) == []


def test_default_user_models_folder_is_in_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert default_user_models_dir() == tmp_path / ".kneealignment" / "models"
