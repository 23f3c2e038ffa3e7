"""Where a chain's files live: a local directory or a URI that ``pyarrow.fs`` understands
(``s3://bucket/prefix``, ``gs://…``, ``hdfs://…``), named by ``storage.root``.

Every stage output — source and distilled Parquet, manifests, stage records, model
directories, Ray Train's checkpoints — is written and read through these functions, so workers
on other nodes read what the driver wrote and nothing depends on the driver's disk. Locations
are plain strings (a local path, or a URI) joined with ``/``. Ray Data and Ray Train take the
same strings. Torch and MLflow need local files: ``local_copy`` downloads a model directory
(once per process and version), ``upload_dir`` puts one in place.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

_CHUNK = 1 << 20


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def resolve(root: str | Path) -> str:
    """An absolute location: a URI as given (without a trailing slash), a local path made absolute."""
    return str(root).rstrip("/") if is_uri(root) else str(Path(root).resolve())


def join(location: str | Path, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts])


@dataclass(frozen=True)
class StorageRoot:
    """The storage root a config names (``storage.root``): a local directory or a URI, resolved
    once. Everything a chain, a sweep or a study keeps lives under it, as locations it joins."""

    location: str  # absolute: a local path, or a URI without a trailing slash

    @classmethod
    def of(cls, root: str | Path) -> StorageRoot:
        return cls(resolve(root))

    @property
    def is_uri(self) -> bool:
        return is_uri(self.location)

    def join(self, *parts: str) -> str:
        return join(self.location, *parts)

    def check_writable(self) -> None:
        check_writable(self.location)

    def __str__(self) -> str:
        return self.location


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``location`` and the path inside it."""
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(str(location))
        except (ValueError, OSError) as exc:  # pyarrow.lib.ArrowInvalid is a ValueError
            raise ValueError(f"storage location {location}: pyarrow.fs cannot open it ({exc})") from None
    return pafs.LocalFileSystem(), str(Path(location).resolve())


def check_writable(root: str | Path) -> None:
    """Fail before any work when the storage root cannot be written (bad URI, no bucket, no
    credentials, read-only mount), naming the root and the reason."""
    marker = join(resolve(root), f".pld-write-check-{uuid.uuid4().hex}")  # its own: chains may start together
    try:
        write_text(marker, "ok")
        fs, path = filesystem(marker)
        fs.delete_file(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"storage.root {root}: cannot write there ({exc}); set storage.root to a writable directory "
                         "or URI (s3://bucket/prefix with credentials in the environment)") from None


def _info(location: str | Path) -> pafs.FileInfo:
    fs, path = filesystem(location)
    return fs.get_file_info(path)


def is_file(location: str | Path) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str | Path) -> bool:
    return _info(location).type == pafs.FileType.Directory


def exists(location: str | Path) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def version(location: str | Path) -> int:
    """Modification time (ns) of a file: a cache key that changes when the file is rewritten."""
    return _info(location).mtime_ns or 0


def read_bytes(location: str | Path) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(location: str | Path) -> str:
    return read_bytes(location).decode()


def write_text(location: str | Path, text: str) -> None:
    """Write a small file whole: to a temporary name, then moved over the target, so that a
    reader sees the old file or the new one (an object store's put is atomic by itself)."""
    fs, path = filesystem(location)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(text.encode())
    fs.move(tmp, path)


def remove_file(location: str | Path) -> None:
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def remove_tree(location: str | Path) -> None:
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def list_files(location: str | Path) -> list[str]:
    """Every file under a directory, as paths relative to it, sorted."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path[len(path.rstrip("/")) + 1:] for i in infos if i.type == pafs.FileType.File)


def list_dirs(location: str | Path) -> list[str]:
    """Names of the directories directly under ``location``."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.Directory)


def file_sha256(location: str | Path) -> str:
    fs, path = filesystem(location)
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def upload_dir(local_dir: str | Path, location: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Replace ``location`` with a copy of ``local_dir`` (files named in ``ignore`` left out)."""
    remove_tree(location)
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)
    for file in sorted(p for p in Path(local_dir).rglob("*") if p.is_file() and p.name not in ignore):
        rel = file.relative_to(local_dir).as_posix()
        if "/" in rel:
            fs.create_dir(f"{path}/{rel.rsplit('/', 1)[0]}", recursive=True)
        pafs.copy_files(str(file), f"{path}/{rel}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


_COPIES: dict[tuple[str, int], str] = {}  # per process: (location, version) → local directory


def local_copy(location: str | Path) -> str:
    """A local directory holding what ``location`` holds: the directory itself when local, else
    a download kept for the life of the process (and fetched again when the files change)."""
    if not is_uri(location):
        return str(location)
    files = list_files(location)
    if not files:
        raise FileNotFoundError(f"{location}: no such directory, or it is empty")
    key = (str(location), max(version(join(location, f)) for f in files))
    if key not in _COPIES or not Path(_COPIES[key]).is_dir():
        target = tempfile.mkdtemp(prefix="pld-copy-")
        fs, path = filesystem(location)
        pafs.copy_files(path, target, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        for old_key in [k for k in _COPIES if k[0] == str(location)]:
            shutil.rmtree(_COPIES.pop(old_key), ignore_errors=True)
        _COPIES[key] = target
    return _COPIES[key]
