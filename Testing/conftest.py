"""Shared pytest set-up: the training package (Training/kneetrain) is importable from the
checkout until packaging installs it as ``kneetrain``; no models of the developer's own; shared fixtures."""

import sys
from pathlib import Path

import pytest

_TRAINING = str(Path(__file__).resolve().parents[1] / "Training")
if _TRAINING not in sys.path:
    sys.path.insert(0, _TRAINING)


@pytest.fixture(scope="session", autouse=True)
def no_models_of_the_developer(tmp_path_factory):
    """Which models are used must not depend on the machine: an empty user's models folder and no
    $KNEEALIGN_MODELS, so each role comes from the shipped bundles unless a test says otherwise
    (subprocesses inherit this)."""
    from KneeAlignmentLib.bundle.resolve import ENV_MODELS, ENV_USER_MODELS

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_USER_MODELS, str(tmp_path_factory.mktemp("user_models")))
        patch.delenv(ENV_MODELS, raising=False)
        yield


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """A models folder of tiny random-init bundles (``model_factory.save_models``), shared by a session."""
    from model_factory import save_models

    return save_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def one_torch_thread():
    """Tiny networks run faster on one thread, far faster on a busy machine (no spinning thread pool);
    a test module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
