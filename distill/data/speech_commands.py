"""Google Speech Commands layout (and the synthetic corpus written in the same layout).

``<root>/<word>/<speaker>_nohash_<k>.wav``, long noise files in ``_background_noise_/``,
and ``validation_list.txt`` / ``testing_list.txt`` naming the held-out files (everything
else is train). The default 12-class label space is built as the reference TensorFlow
recipe builds it: the keywords, ``_unknown_`` sampled from the other words and
``_silence_`` cut from the background noise, each a percentage of the split's keyword
clips, seeded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from distill.data.audio import audio_frames
from distill.data.base import SILENCE, UNKNOWN, DatasetOptions, SourceIndex, register_dataset

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
NOISE_DIR = "_background_noise_"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class SpeechCommandsOptions(DatasetOptions):
    name: Literal["speech_commands"] = "speech_commands"
    path: str = Field("data/synth-sc", description="Root of a Speech Commands copy (or `pld data synth` output).")
    mode: Literal["keywords", "all"] = Field(
        "keywords", description="keywords: the keywords + _unknown_ + _silence_; all: every word is a class (+ _silence_).")
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS), min_length=1,
                                description="Keyword classes in `keywords` mode.")
    unknown_percentage: float = Field(10.0, ge=0, le=100, description="_unknown_ clips, % of the split's keyword clips.")
    silence_percentage: float = Field(10.0, ge=0, le=100, description="_silence_ clips, % of the split's keyword clips.")


def _read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.exists():
        return set()
    entries = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    missing = sorted(e for e in entries if not (root / e).exists())
    if missing:
        raise FileNotFoundError(
            f"{path}: lists {len(missing)} file(s) that do not exist, e.g. {missing[0]!r}; "
            "fix the list or restore the files")
    return entries


def _silence_clips(root: Path, split: str, count: int, clip_samples: int, sample_rate: int,
                   rng: np.random.Generator) -> list[dict]:
    noise_files = sorted(p for p in (root / NOISE_DIR).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not noise_files:
        raise FileNotFoundError(f"{root / NOISE_DIR}: no noise files to cut _silence_ clips from; "
                                "add them or set data.silence_percentage: 0")
    usable = []
    for p in noise_files:
        frames, rate = audio_frames(str(p))
        need = int(math.ceil(clip_samples * rate / sample_rate))
        if frames >= need:
            usable.append((p, frames - need))
    if not usable:
        raise ValueError(f"{root / NOISE_DIR}: every noise file is shorter than one clip")
    rows = []
    for i in range(count):
        path, max_start = usable[rng.integers(len(usable))]
        rows.append(dict(clip_id=f"{SILENCE}/{split}/{i:06d}", path=str(path), start=int(rng.integers(max_start + 1)),
                         label=SILENCE, speaker="", split=split))
    return rows


@register_dataset("speech_commands", SpeechCommandsOptions)
def build_speech_commands(opts: SpeechCommandsOptions) -> SourceIndex:
    root = Path(opts.path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.path: {root} is not a directory; generate the default corpus with "
                                f"`pld data synth --out {opts.path}` or point data.path at a Speech Commands copy")
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_") and not d.name.startswith("."))
    if not words:
        raise ValueError(f"{root}: no word folders found (expected <root>/<word>/*.wav)")
    if opts.mode == "keywords":
        absent = [k for k in opts.keywords if k not in words]
        if absent:
            raise ValueError(f"{root}: keyword folder(s) {absent} missing; found {words}")
    validation, testing = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")

    rows = []
    for word in words:
        for f in sorted((root / word).iterdir()):
            if f.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            rel = f"{word}/{f.name}"
            split = "validation" if rel in validation else "test" if rel in testing else "train"
            speaker = f.name.split("_nohash_")[0] if "_nohash_" in f.name else ""
            rows.append(dict(clip_id=rel, path=str(f), start=0, word=word, speaker=speaker, split=split))
    clips = pd.DataFrame(rows)
    sample_clip = int(round(opts.clip_ms * opts.sample_rate / 1000))
    rng = np.random.default_rng(opts.seed)

    if opts.mode == "all":
        labels = ([SILENCE] if opts.silence_percentage > 0 else []) + words
        clips["label"] = clips["word"]
        parts = [clips]
        for split, group in clips.groupby("split", sort=True):
            n = int(math.ceil(len(group) * opts.silence_percentage / 100))
            parts.append(pd.DataFrame(_silence_clips(root, split, n, sample_clip, opts.sample_rate, rng)))
    else:
        labels = [SILENCE, UNKNOWN] + list(opts.keywords)
        is_kw = clips["word"].isin(opts.keywords)
        clips["label"] = np.where(is_kw, clips["word"], UNKNOWN)
        parts = []
        for split in sorted(clips["split"].unique()):
            in_split = clips["split"] == split
            kw, unk = clips[in_split & is_kw], clips[in_split & ~is_kw]
            n_unknown = min(len(unk), int(math.ceil(len(kw) * opts.unknown_percentage / 100)))
            n_silence = int(math.ceil(len(kw) * opts.silence_percentage / 100))
            parts += [kw, unk.iloc[np.sort(rng.permutation(len(unk))[:n_unknown])]]
            if n_silence:
                parts.append(pd.DataFrame(_silence_clips(root, split, n_silence, sample_clip, opts.sample_rate, rng)))
    index = pd.concat(parts, ignore_index=True).drop(columns=["word"], errors="ignore")
    index["start"] = index["start"].astype("int64")
    return SourceIndex(clips=index.reset_index(drop=True), labels=labels)
