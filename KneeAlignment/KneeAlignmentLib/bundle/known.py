"""Which model bundles are known releases: the pinned list in ``data/known_models.json``.

A bundle's own SHA-256 (``metadata.json`` -> weights) only shows that weights and
metadata agree with each other; anyone who changes the weights can update it. The
released bundles' digests therefore live in the package itself: for each release, the
SHA-256 of its weights file and of its metadata (canonical JSON: sorted keys, no
whitespace). ``format.load_bundle`` looks every bundle up here; results record each
model's provenance, "release" or "user-supplied" (imported, trained in-house, or
changed), and ``kneealign models verify`` lists what is installed.

When the shipped models in ``Resources/Models`` are re-exported, regenerate the list::

    .venv/bin/python -m KneeAlignmentLib.bundle.known

(``--models-dir DIR`` to pin another folder; ``Testing/test_bundle_known.py`` fails
until the list matches the shipped bundles.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .resolve import ROLE_DIRS, SHIPPED_MODELS_DIR

__all__ = [
    "KNOWN_MODELS_FILE",
    "PROVENANCES",
    "BundleStatus",
    "known_models",
    "metadata_digest",
    "provenance",
    "verify_models",
    "write_known_models",
]

KNOWN_MODELS_FILE = Path(__file__).resolve().parents[1] / "data" / "known_models.json"
PROVENANCES = ("release", "user-supplied", "unknown")  # unknown: results written before provenance was recorded
_FORMAT = "kneealignment-known-models"


def metadata_digest(metadata: Mapping[str, Any]) -> str:
    """SHA-256 of a bundle's parsed ``metadata.json`` as canonical JSON (formatting does not count)."""
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@lru_cache(maxsize=1)
def known_models() -> tuple[Mapping[str, str], ...]:
    """The pinned releases: entries with role, model_id, weights_sha256, metadata_sha256 (empty if unreadable)."""
    try:
        document = json.loads(KNOWN_MODELS_FILE.read_text(encoding="utf-8"))
        entries = document["models"] if document.get("format") == _FORMAT else []
        return tuple({k: str(e[k]) for k in ("role", "model_id", "weights_sha256", "metadata_sha256")}
                     for e in entries)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()  # no list: nothing counts as a release


def provenance(weights_sha256: str, metadata_sha256: str) -> str:
    """"release" when both digests match one pinned release, else "user-supplied"."""
    for entry in known_models():
        if entry["weights_sha256"] == weights_sha256 and entry["metadata_sha256"] == metadata_sha256:
            return "release"
    return "user-supplied"


@dataclass(frozen=True)
class BundleStatus:
    """One role of a models folder (its folder name), as ``kneealign models verify`` reports it.

    ``status``: "release", "user-supplied", "missing" or "invalid"; ``detail``: why
    (the load error for "invalid"); ``path``: the bundle folder (None when missing);
    ``model_id`` and ``weights_sha256`` when it loaded.
    """

    role: str
    status: str
    detail: str
    model_id: str | None = None
    weights_sha256: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"role": self.role, "status": self.status, "detail": self.detail, "model_id": self.model_id,
                "weights_sha256": self.weights_sha256, "path": self.path}


def verify_models(paths: Mapping[str, str | os.PathLike[str]]) -> list[BundleStatus]:
    """Load the bundle of each role (``resolve.resolve_models(..., complete=False)`` gives the
    folders; all checks of ``format.load_bundle``) and say whether it is a known release."""
    from ..errors import BundleError
    from .format import load_bundle

    statuses = []
    for role, name in ROLE_DIRS.items():
        if role not in paths:
            statuses.append(BundleStatus(name, "missing", "no bundle for this role"))
            continue
        folder = Path(paths[role])
        try:
            loaded = load_bundle(folder, expected_stage="global" if role == "global" else "local",
                                 expected_schema=None if role == "global" else role)
        except BundleError as exc:
            statuses.append(BundleStatus(name, "invalid", str(exc), path=str(folder)))
            continue
        meta = loaded.metadata
        detail = ("matches a release pinned in this software" if loaded.provenance == "release" else
                  "not a known release: imported, trained in-house, or changed (its results say user-supplied)")
        statuses.append(BundleStatus(name, loaded.provenance, detail, meta.model_id, meta.weights_sha256,
                                     str(folder)))
    return statuses


def write_known_models(models_dir: str | os.PathLike[str], path: str | os.PathLike[str] = KNOWN_MODELS_FILE) -> Path:
    """Pin every bundle of ``models_dir`` (each must load) as a release in ``path``.

    Earlier releases in ``path`` stay pinned unless a bundle here has the same model id
    (a re-export of that version replaces its entry).
    """
    from .format import METADATA_FILE, load_bundle

    path = Path(path)
    entries = []
    for role in ROLE_DIRS.values():
        folder = Path(models_dir) / role
        if not folder.exists():
            continue
        loaded = load_bundle(folder)  # refuses a damaged bundle
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        entries.append({"role": role, "model_id": loaded.metadata.model_id,
                        "weights_sha256": loaded.metadata.weights_sha256,
                        "metadata_sha256": metadata_digest(metadata)})
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")).get("models", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    current = {entry["model_id"] for entry in entries}
    entries = [e for e in earlier if isinstance(e, dict) and e.get("model_id") not in current] + entries
    document = {"format": _FORMAT, "note": "released model bundles; regenerate with "
                                           "`python -m KneeAlignmentLib.bundle.known` after re-exporting them",
                "models": entries}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    known_models.cache_clear()
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m KneeAlignmentLib.bundle.known",
                                     description="Pin the bundles of a models folder as the known releases "
                                                 f"({KNOWN_MODELS_FILE.name}, inside the package).")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="models folder to pin (default: the shipped Resources/Models)")
    args = parser.parse_args(argv)
    path = write_known_models(args.models_dir or SHIPPED_MODELS_DIR)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
