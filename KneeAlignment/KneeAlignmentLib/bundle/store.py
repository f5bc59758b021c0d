"""The user's models folder: import verified model bundles into it.

A hospital without internet puts bundles there from a local folder or ``.zip`` (released
by us or trained in-house); ``resolve.resolve_models`` then takes each role from it where
present, else from the shipped bundles. The folder (``resolve.default_user_models_dir``;
the Slicer module lets the user change it) has the layout of a models folder::

    <models>/global/  <models>/local_preop/  <models>/local_postop/

Importing (:func:`import_models`) never trusts the source: the bundles are copied into a
hidden staging folder beside their destination (a zip is extracted there, refusing
absolute paths, ``..``, links and oversized archives) and each staged copy is loaded and
checked as the pipeline will load it (``format.load_bundle``: metadata, format version,
SHA-256 of the weights; ``modelset.StageModel.from_bundle``: codec, frame and landmark
names). Only then are they moved into place (``format.replace_folder``). An installed
bundle is replaced only when the caller says so (``replace=True``); an identical one is
left as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BundleError
from .format import METADATA_FILE, load_bundle, replace_folder
from .modelset import StageModel
from .resolve import ROLE_DIRS

__all__ = [
    "BundleConflict",
    "ImportedBundle",
    "MAX_ARCHIVE_BYTES",
    "import_models",
]

MAX_ARCHIVE_BYTES = 8 * 1024**3  # uncompressed; far above the paper-size model set
_MAX_ARCHIVE_ENTRIES = 10_000
_MAX_BUNDLE_DEPTH = 3  # a bundle's metadata may sit this many folders below the source root


class BundleConflict(BundleError):
    """An import would replace an installed bundle that differs; nothing was changed.

    ``role``: the role folder in question; ``installed``: its path; ``incoming``: the
    model id that would replace it.
    """

    def __init__(self, role: str, installed: Path, incoming: str) -> None:
        super().__init__(f"{installed} holds another {role} model; nothing was changed. Import again with "
                         f"replace to put {incoming} in its place")
        self.role, self.installed, self.incoming = role, installed, incoming


@dataclass(frozen=True)
class ImportedBundle:
    """One bundle handled by :func:`import_models`.

    ``role``: "global", "preop" or "postop"; ``status``: "installed", "replaced" or
    "already installed" (identical files were there).
    """

    role: str
    model_id: str
    path: Path
    status: str


def import_models(source: str | os.PathLike[str], models_dir: str | os.PathLike[str], *,
                  replace: bool = False) -> list[ImportedBundle]:
    """Verify and install the bundles of ``source`` into ``models_dir``.

    Args:
        source: one bundle folder, a models folder (bundles in subfolders), or a ``.zip``
            of either.
        models_dir: the user's models folder (created if needed).
        replace: replace installed bundles that differ; without it such an import is
            refused before anything is changed.

    Returns:
        One entry per bundle found, in role order.

    Raises:
        BundleConflict: a differing installed bundle without ``replace``.
        BundleError: no bundle in the source, a bundle that fails verification
            (tampered weights, broken metadata, a network that does not fit), two
            bundles for one role, an unsafe or oversized zip.
    """
    source, models_dir = Path(source), Path(models_dir)
    if not source.exists():
        raise BundleError(f"{source}: not found")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=models_dir))
    try:
        if source.is_dir():
            shutil.copytree(source, staging / "source", symlinks=True)
            _refuse_links(staging / "source", source.name)
        elif zipfile.is_zipfile(source):
            _extract_zip(source, staging / "source")
        else:
            raise BundleError(f"{source.name}: neither a folder nor a .zip archive")
        staged = _verified_bundles(staging / "source", source.name)
        results = []
        for role, (folder, model_id) in staged.items():
            target = models_dir / ROLE_DIRS[role]
            if not target.exists():
                status = "installed"
            elif _tree_digest(target) == _tree_digest(folder):
                status = "already installed"
            elif replace:
                status = "replaced"
            else:
                raise BundleConflict(role, target, model_id)
            results.append(ImportedBundle(role, model_id, target, status))
        for entry in results:
            if entry.status != "already installed":
                replace_folder(staged[entry.role][0], entry.path)
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verified_bundles(root: Path, name: str) -> dict[str, tuple[Path, str]]:
    """role -> (staged bundle folder, model id), every bundle loaded and checked, in role order."""
    found = sorted(p.parent.parent for p in root.rglob("metadata.json")
                   if p.parent.name == "configs" and len(p.relative_to(root).parts) <= _MAX_BUNDLE_DEPTH + 2)
    if not found:
        raise BundleError(f"{name}: no model bundle inside (a bundle folder holds {METADATA_FILE})")
    by_role: dict[str, tuple[Path, str]] = {}
    for folder in found:
        loaded = load_bundle(folder, device="cpu")
        meta = loaded.metadata
        role = "global" if meta.stage == "global" else meta.schema
        StageModel.from_bundle(loaded, None if role == "global" else role)
        if role in by_role:
            raise BundleError(f"{name}: two {role} models ({by_role[role][1]} and {meta.model_id}); import one")
        by_role[role] = (folder, meta.model_id)
    return {role: by_role[role] for role in ROLE_DIRS if role in by_role}


def _extract_zip(archive: Path, target: Path) -> None:
    """Extract a zip, refusing entries that would land outside ``target`` or are links."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            if len(entries) > _MAX_ARCHIVE_ENTRIES or sum(e.file_size for e in entries) > MAX_ARCHIVE_BYTES:
                raise BundleError(f"{archive.name}: archive too large (more than {_MAX_ARCHIVE_ENTRIES} entries or "
                                  f"{MAX_ARCHIVE_BYTES // 1024**3} GiB)")
            for entry in entries:
                parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
                is_link = (entry.external_attr >> 16) & 0o170000 == 0o120000
                if entry.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]) or is_link:
                    raise BundleError(f"{archive.name}: unsafe entry {entry.filename!r} (absolute path, '..' or link)")
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{archive.name}: damaged zip archive ({exc})") from exc


def _refuse_links(root: Path, name: str) -> None:
    links = [p for p in root.rglob("*") if p.is_symlink()]
    if links:
        raise BundleError(f"{name}: contains links ({links[0].relative_to(root)}); copy the real files instead")


def _tree_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file (hidden files included)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
