"""The user's models folder and which bundles are used: verified import (bundle.store) and the
one rule that picks each role's bundle (bundle.resolve), for the command line and Slicer alike."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from KneeAlignmentLib import cli
from KneeAlignmentLib.bundle import resolve
from KneeAlignmentLib.bundle.format import WEIGHTS_FILE
from KneeAlignmentLib.bundle.modelset import ModelSet
from KneeAlignmentLib.bundle.resolve import (
    ENV_MODELS,
    ENV_USER_MODELS,
    SHIPPED_MODELS_DIR,
    default_user_models_dir,
    resolve_models,
)
from KneeAlignmentLib.bundle.store import BundleConflict, import_models
from KneeAlignmentLib.errors import BundleError
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
    models = ModelSet.load(resolve_models(user_dir=user), device="cpu")
    assert models.kinds == ("preop", "postop")
    assert {m.info.model_id for m in (models.global_model, *models.local_models.values())} == {
        "tiny-global@0.0.1", "tiny-preop@0.0.1", "tiny-postop@0.0.1"}  # the user's, not the shipped ones


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


def test_role_by_role_fallback_to_the_shipped_models(tmp_path, released, retrained, monkeypatch):
    monkeypatch.setattr(resolve, "SHIPPED_MODELS_DIR", released)
    user = tmp_path / "user"
    import_models(retrained / "local_postop", user)
    paths = resolve_models(user_dir=user)
    assert paths == {"global": released / "global", "preop": released / "local_preop", "postop": user / "local_postop"}
    monkeypatch.setattr(resolve, "SHIPPED_MODELS_DIR", tmp_path / "nothing")
    with pytest.raises(BundleError, match="no global model"):
        resolve_models(user_dir=user)
    only_global = tmp_path / "only-global"
    import_models(released / "global", only_global)
    with pytest.raises(BundleError, match="no local model"):
        resolve_models(user_dir=only_global)


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


def test_default_user_models_folder_is_in_the_home_folder_unless_the_environment_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_USER_MODELS, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert default_user_models_dir() == tmp_path / ".kneealignment" / "models"
    monkeypatch.setenv(ENV_USER_MODELS, str(tmp_path / "mine"))
    assert default_user_models_dir() == tmp_path / "mine"


def test_the_test_suite_never_sees_the_developers_own_models():
    """conftest points the user's models folder at an empty folder and unsets $KNEEALIGN_MODELS."""
    assert ENV_MODELS not in os.environ
    assert default_user_models_dir().is_dir() and not any(default_user_models_dir().iterdir())
    assert resolve_models() == {role: SHIPPED_MODELS_DIR / name for role, name in resolve.ROLE_DIRS.items()}
    assert SHIPPED_MODELS_DIR.parts[-3:] == ("KneeAlignment", "Resources", "Models")


# --- the one rule ---------------------------------------------------------------------------

def test_an_explicit_folder_is_used_whole(tmp_path, released, retrained, monkeypatch):
    user = tmp_path / "user"
    import_models(retrained, user)
    explicit = save_models(tmp_path / "explicit", kinds=("preop",))  # no post-op model: none is taken from elsewhere
    expected = {"global": explicit / "global", "preop": explicit / "local_preop"}
    assert resolve_models(explicit, user) == expected
    monkeypatch.setenv(ENV_MODELS, str(explicit))
    assert resolve_models(user_dir=user) == expected  # $KNEEALIGN_MODELS: the same
    assert resolve_models(released, user)["postop"] == released / "local_postop"  # --models-dir before the variable
    assert ModelSet.load(explicit, device="cpu").kinds == ("preop",)  # a folder given to ModelSet.load: the same rule


def test_the_user_folder_comes_from_the_environment_unless_the_caller_names_one(tmp_path, retrained, monkeypatch):
    mine, setting = tmp_path / "mine", tmp_path / "setting"
    import_models(retrained / "local_preop", mine)
    import_models(retrained / "global", setting)
    monkeypatch.setenv(ENV_USER_MODELS, str(mine))
    assert resolve_models()["preop"] == mine / "local_preop"
    assert resolve_models()["global"] == SHIPPED_MODELS_DIR / "global"
    chosen = resolve_models(user_dir=setting)  # the Slicer module's setting
    assert chosen["global"] == setting / "global" and chosen["preop"] == SHIPPED_MODELS_DIR / "local_preop"


def test_missing_models_say_where_they_were_looked_for_and_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(BundleError) as missing:
        ModelSet.load(tmp_path / "nowhere")
    message = str(missing.value)
    assert str(tmp_path / "nowhere") in message and ENV_MODELS in message and "Training" in message
    assert str(default_user_models_dir()) in message
    save_models(tmp_path / "global-only", kinds=())
    with pytest.raises(BundleError, match="no local model"):
        ModelSet.load(tmp_path / "global-only")
    assert resolve_models(tmp_path / "global-only", complete=False) == {"global": tmp_path / "global-only" / "global"}
    assert resolve_models(tmp_path / "nowhere", complete=False) == {}
    monkeypatch.setenv(ENV_MODELS, str(tmp_path / "elsewhere"))
    with pytest.raises(BundleError, match="elsewhere"):
        resolve_models()


def test_the_command_line_takes_each_role_from_the_users_folder(tmp_path, retrained, monkeypatch, capsys):
    user = tmp_path / "user"
    import_models(retrained / "local_postop", user)
    monkeypatch.setenv(ENV_USER_MODELS, str(user))
    assert cli.main(["models", "verify", "--json"]) == 1  # the user's model is not a release
    report = {b["role"]: (b["status"], b["path"]) for b in json.loads(capsys.readouterr().out)["bundles"]}
    assert report == {"global": ("release", str(SHIPPED_MODELS_DIR / "global")),
                      "local_preop": ("release", str(SHIPPED_MODELS_DIR / "local_preop")),
                      "local_postop": ("user-supplied", str(user / "local_postop"))}
    assert cli.main(["models", "verify", "--models-dir", str(retrained / "local_postop")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["global", "missing"], ["local_preop", "missing"],
                                                     ["local_postop", "missing"]]


def test_measure_says_which_bundles_it_uses_unless_quiet(tmp_path, retrained, monkeypatch, capsys):
    user = tmp_path / "user"
    import_models(retrained, user)
    monkeypatch.setenv(ENV_USER_MODELS, str(user))
    (image,) = sorted((Path(__file__).parent / "data" / "golden_measure" / "inputs").glob("*.dcm"))[:1]
    cli.main(["measure", str(image), "--out", str(tmp_path / "out")])
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("models: ")]
    for role in ("global", "local_preop", "local_postop"):
        assert f"(user-supplied) from {user / role}" in line
    cli.main(["measure", str(image), "--out", str(tmp_path / "again"), "--quiet"])
    assert "models: " not in capsys.readouterr().err
