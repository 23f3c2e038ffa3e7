"""Integrity of what a chain writes: content hashes, sealed manifests, fingerprints.

A dataset directory is *complete* only when its ``manifest.json`` carries a ``content_sha256``
(``seal`` writes it last, after every file is in place). Before a stage uses a dataset, or a
resumed chain reuses one, ``verify`` recomputes the hash and refuses a dataset that changed,
so no stage ever trains on rows nobody wrote. The hash covers every data file's relative
path and bytes (sorted), so it is the same wherever the files are copied.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from distill.names import MANIFEST
from distill.runtime.infra import storage



class IntegrityError(ValueError):
    """A dataset or checkpoint does not match its manifest; the message says which and what to do."""


def tree_sha256(root: str | Path) -> str:
    """Hash of every file under ``root`` (a local directory or a storage URI): relative paths
    and contents, in sorted order."""
    digest = hashlib.sha256()
    for rel in storage.list_files(root):
        digest.update(rel.encode() + b"\0" + storage.file_sha256(storage.join(root, rel)).encode())
    return digest.hexdigest()


def config_fingerprint(resolved: dict[str, Any]) -> str:
    """What a chain computes, as a hash: the config without where it is tracked and which
    cluster runs it (a chain resumed on another cluster is the same chain)."""
    semantic = {k: v for k, v in resolved.items() if k not in ("tracking", "ray")}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(dataset_dir: str | Path) -> dict | None:
    path = storage.join(dataset_dir, MANIFEST)
    if not storage.is_file(path):
        return None
    try:
        return json.loads(storage.read_text(path))
    except json.JSONDecodeError:
        return None  # half-written: not complete


def seal(dataset_dir: str | Path, manifest: dict, **extra: Any) -> dict:
    """Add the content hash (and ``extra`` provenance) and write the manifest — last, whole."""
    sealed = {**manifest, **extra, "content_sha256": tree_sha256(storage.join(dataset_dir, "data"))}
    storage.write_text(storage.join(dataset_dir, MANIFEST), json.dumps(sealed, indent=2))
    return sealed


def is_sealed(dataset_dir: str | Path) -> bool:
    manifest = read_manifest(dataset_dir)
    return bool(manifest and manifest.get("content_sha256"))


def verify(dataset_dir: str | Path, expect: dict[str, Any] | None = None) -> dict:
    """The sealed manifest of ``dataset_dir`` if the files still match it (and its fields match
    ``expect``); raises ``IntegrityError`` naming the difference otherwise."""
    manifest = read_manifest(dataset_dir)
    if not manifest or not manifest.get("content_sha256"):
        raise IntegrityError(f"{dataset_dir}: no sealed {MANIFEST}: the dataset was never completed; "
                             "delete the directory and run the stage again")
    actual = tree_sha256(storage.join(dataset_dir, "data"))
    if actual != manifest["content_sha256"]:
        raise IntegrityError(f"{dataset_dir}: the data files changed after the manifest was written "
                             f"(content hash {actual[:12]}… ≠ {manifest['content_sha256'][:12]}…); "
                             "delete the directory and run the stage again")
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise IntegrityError(f"{storage.join(dataset_dir, MANIFEST)}: {key} is {manifest.get(key)!r}, expected {value!r}; "
                                 "the dataset was made for another stage or teacher — delete it and run the stage again")
    return manifest
