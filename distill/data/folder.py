"""Any folder of labelled audio: ``<root>/<label>/<file>``.

WAV, FLAC or OGG of any sample rate, channel count and length; each file becomes one clip
of ``clip_ms`` through the dataset's ``policy`` (resample, downmix, pad or crop — counted).
Splits come from ``validation_list.txt`` / ``testing_list.txt`` (lines ``<label>/<file>``)
when the root has them, else from a stable hash of the file name — or of the part of it a
``group_pattern`` regex captures, so that one speaker or recording session stays in one
split (the Speech Commands recipe hashes the name before ``_nohash_`` for the same reason).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from distill.data.audio import WHOLE_FILE
from distill.data.base import INDEX_COLUMNS, DatasetOptions, SourceIndex, register_dataset, reject_unstorable_names

log = logging.getLogger(__name__)
LIST_FILES = {"validation": "validation_list.txt", "test": "testing_list.txt"}


class FolderOptions(DatasetOptions):
    name: Literal["folder"] = "folder"
    labels: list[str] | None = Field(None, min_length=1, description="Label folders to use, in class order "
                                                                    "(default: every folder, sorted).")
    validation_percentage: float = Field(10.0, ge=0, lt=100, description="% of files hashed into validation "
                                                                         "(when there are no list files).")
    test_percentage: float = Field(10.0, ge=0, lt=100, description="% of files hashed into test (when there are no "
                                                                   "list files).")
    group_pattern: str | None = Field(None, description="Regex on the file name whose first group (or whole match) "
                                                        "names a group kept in one split, e.g. '^([^_]+)_' for a "
                                                        "speaker prefix; also the speaker column.")

    @field_validator("group_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _room_for_train(self) -> "FolderOptions":
        if self.validation_percentage + self.test_percentage >= 100:
            raise ValueError("validation_percentage + test_percentage must leave some files for train")
        return self


def label_files(folder: Path) -> list[Path]:
    """Every non-hidden entry of a label folder: what is not audio is quarantined downstream, not ignored."""
    return sorted(f for f in folder.iterdir() if not f.name.startswith("."))


def read_list(root: Path, name: str) -> set[str]:
    """Entries ``<label>/<file>`` of a split list; a label or file it names must exist."""
    path = root / name
    if not path.exists():
        return set()
    entries = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    folders = sorted({e.split("/")[0] for e in entries if not (root / e.split("/")[0]).is_dir()})
    if folders:
        raise FileNotFoundError(f"{path}: names label folder(s) {folders} that do not exist under {root}; "
                                "restore them or remove their lines from the list")
    missing = sorted(e for e in entries if not (root / e).exists() and not (root / e).is_symlink())
    if missing:
        raise FileNotFoundError(f"{path}: lists {len(missing)} file(s) that do not exist, e.g. {missing[0]!r}; "
                                "fix the list or restore the files")
    return entries


def hash_split(key: str, validation_percentage: float, test_percentage: float) -> str:
    """Stable split of a name: the same key lands in the same split on every machine and run."""
    bucket = int(hashlib.sha1(os.fsencode(key)).hexdigest(), 16) % 10_000 / 100
    if bucket < validation_percentage:
        return "validation"
    return "test" if bucket < validation_percentage + test_percentage else "train"


@register_dataset("folder", FolderOptions)
def build_folder(opts: FolderOptions) -> SourceIndex:
    root = Path(opts.path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.path: {root} is not a directory; point it at <root>/<label>/<audio files>")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    labels = list(opts.labels) if opts.labels else found
    if not labels:
        raise ValueError(f"data.path: {root} has no label folders; expected <root>/<label>/<audio files>")
    absent = [x for x in labels if x not in found]
    if absent:
        raise ValueError(f"data.labels: folder(s) {absent} missing under {root}; found {found}")
    lists = {split: read_list(root, name) for split, name in LIST_FILES.items()}
    use_lists = any(lists.values())
    pattern = re.compile(opts.group_pattern) if opts.group_pattern else None
    rows, unmatched = [], []
    for label in labels:
        files = label_files(root / label)
        if not files:
            raise ValueError(f"{root / label}: label folder is empty; add its files or leave it out of data.labels")
        for f in files:
            rel, group = f"{label}/{f.name}", f.name
            if pattern is not None:
                m = pattern.search(f.name)
                if m:
                    group = m.group(1) if m.groups() else m.group(0)
                else:
                    unmatched.append(rel)
            if use_lists:
                split = next((s for s, entries in lists.items() if rel in entries), "train")
            else:
                split = hash_split(group, opts.validation_percentage, opts.test_percentage)
            rows.append(dict(clip_id=rel, path=str(f), start=WHOLE_FILE, label=label,
                             speaker=group if pattern is not None else "", split=split))
    if unmatched:
        log.warning("data.group_pattern %r matched no part of %d file name(s) (e.g. %s); those are split by "
                    "their whole name", opts.group_pattern, len(unmatched), unmatched[0])
    rows, rejected = reject_unstorable_names(rows)
    return SourceIndex(clips=pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), labels=labels, rejected=rejected)
