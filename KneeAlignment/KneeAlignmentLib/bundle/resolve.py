"""Which model bundles are used: one rule for the command line, the Slicer module and training.

A models folder holds one bundle folder per role (:data:`ROLE_DIRS`)::

    <models>/global/         global-stage bundle (reference points; any schema)
    <models>/local_preop/    local-stage bundle, pre-op schema (134 landmarks)
    <models>/local_postop/   local-stage bundle, post-op schema (181 landmarks)

The rule (:func:`resolve_models`): an explicit models folder (``--models-dir``, else
``$KNEEALIGN_MODELS``) is used whole; otherwise each role comes from the user's models
folder (:func:`default_user_models_dir`: ``$KNEEALIGN_USER_MODELS``, else
``~/.kneealignment/models``; the Slicer module's setting takes its place) where it holds
that role, else from the bundles shipped in ``Resources/Models``. A role is held where its
folder exists (a broken bundle there is an error when loading, never silently skipped).

Importing this module does not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

from ..errors import BundleError
from ..schema import KINDS

__all__ = ["ENV_MODELS", "ENV_USER_MODELS", "ROLE_DIRS", "SHIPPED_MODELS_DIR", "default_user_models_dir",
           "resolve_models"]

ENV_MODELS = "KNEEALIGN_MODELS"
ENV_USER_MODELS = "KNEEALIGN_USER_MODELS"
# role ("global" or a schema kind, the keys of ModelSet.load's mapping) -> its folder in a models folder
ROLE_DIRS = MappingProxyType({"global": "global", "preop": "local_preop", "postop": "local_postop"})
# beside the package: an editable install and Slicer both have it
SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"


def default_user_models_dir() -> Path:
    """The user's models folder: ``$KNEEALIGN_USER_MODELS``, else ``~/.kneealignment/models``."""
    env = os.environ.get(ENV_USER_MODELS)
    return Path(env).expanduser() if env else Path.home() / ".kneealignment" / "models"


def resolve_models(models_dir: str | os.PathLike[str] | None = None, user_dir: str | os.PathLike[str] | None = None,
                   *, complete: bool = True) -> dict[str, Path]:
    """The bundle folder of each role by the module's rule, as ``ModelSet.load`` takes them.

    Args:
        models_dir: an explicit models folder, used whole; None: ``$KNEEALIGN_MODELS`` if set.
        user_dir: the user's models folder; None: :func:`default_user_models_dir`.
        complete: require what measuring needs (the global model and a local one); False
            returns whatever roles were found (``kneealign models verify`` lists them).

    Returns:
        role ("global", "preop", "postop") -> bundle folder, for the roles found, in role order.

    Raises:
        BundleError: (``complete`` only) no such explicit folder, or no global or no local
            model; the message says where it looked and how to get models.
    """
    env = os.environ.get(ENV_MODELS)
    explicit = Path(models_dir) if models_dir is not None else Path(env).expanduser() if env else None
    if explicit is not None:
        folders = [explicit]
        if complete and not explicit.is_dir():
            raise _missing("models folder", str(explicit))
    else:
        folders = [Path(user_dir) if user_dir is not None else default_user_models_dir(), SHIPPED_MODELS_DIR]
    paths = {}
    for role, name in ROLE_DIRS.items():
        found = next((folder / name for folder in folders if (folder / name).is_dir()), None)
        if found is not None:
            paths[role] = found
    if complete and "global" not in paths:
        raise _missing("global model", " or ".join(str(folder / ROLE_DIRS["global"]) for folder in folders))
    if complete and not any(kind in paths for kind in KINDS):
        locals_ = f"{ROLE_DIRS['preop']} or {ROLE_DIRS['postop']}"
        raise _missing("local model", " or ".join(f"{folder}/{locals_}" for folder in folders))
    return paths


def _missing(what: str, where: str) -> BundleError:
    return BundleError(
        f"no {what} found at {where}. A models folder holds bundle folders {', '.join(ROLE_DIRS.values())} "
        f"(the global and at least one local model). Pass --models-dir DIR or set {ENV_MODELS}, import bundles "
        f"into your models folder {default_user_models_dir()} (the Slicer module's Import), or train them with "
        f"the Training package (see Training/README.md).")
