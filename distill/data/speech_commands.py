"""Google Speech Commands, as released (and the synthetic corpus written in the same layout).

Raw release (v0.01: 30 words, v0.02: 35): ``<root>/<word>/<speaker>_nohash_<k>.wav``, long
noise files in ``_background_noise_/``, and ``validation_list.txt`` / ``testing_list.txt``
naming the held-out files (everything else is train). The 12-class label space is built as
the reference TensorFlow recipe builds it: the 10 keywords, ``_unknown_`` sampled from the
other words and ``_silence_`` cut from the background noise, each a percentage of the
split's keyword clips, seeded. ``classes: all`` makes every word a class (plus
``_silence_`` unless its percentage is 0).

Prepared test set (``speech_commands_test``): the official 12-class test archive, one
folder per keyword plus ``_unknown_/`` and ``_silence_/`` holding 1 s clips, no lists.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from distill.core.crops import num_samples
from distill.names import KEYWORDS, NOISE_DIR
from distill.data.audio import AUDIO_SUFFIXES, WHOLE_FILE, audio_frames
from distill.data.base import (INDEX_COLUMNS, SILENCE, UNKNOWN, DatasetOptions, SourceIndex, register_dataset,
                               reject_unstorable_names)
from distill.data.folder import label_files, read_list

V1_WORDS = list(KEYWORDS) + ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                       "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"]
V2_WORDS = V1_WORDS + ["backward", "follow", "forward", "learn", "visual"]
RELEASE_WORDS = {1: V1_WORDS, 2: V2_WORDS}
TESTING_LIST = "testing_list.txt"
VALIDATION_LIST = "validation_list.txt"

log = logging.getLogger(__name__)


class SpeechCommandsOptions(DatasetOptions):
    name: Literal["speech_commands"] = "speech_commands"
    path: str = Field("data/synth-sc", description="Root of a Speech Commands copy (or `pld data synth` output).")
    version: Literal[1, 2] | None = Field(
        None, description="1 (v0.01, 30 words) or 2 (v0.02, 35 words): check the copy is that release; "
                          "unset: use the word folders found (e.g. the synthetic corpus).")
    classes: Literal["keywords", "all"] = Field(
        "keywords", description="keywords (12: the keywords + _unknown_ + _silence_, also written 12) or all "
                                "(every word a class, + _silence_; also written 30 or 35).")
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS), min_length=1,
                                description="Keyword classes of `classes: keywords`.")
    unknown_percentage: float = Field(10.0, ge=0, le=100, description="_unknown_ clips, % of the split's keyword clips.")
    silence_percentage: float = Field(10.0, ge=0, le=100, description="_silence_ clips, % of the split's keyword clips "
                                                                      "(0: no _silence_ class in `all`).")
    testing_list: str = Field(TESTING_LIST, min_length=1, description=(
        "List file (under path) naming the test split, e.g. testing_unseen_voice_list.txt: the synthetic corpus's "
        "test clips of voices no training speaker has. Clips of testing_list.txt that it leaves out are dropped."))
    validation_list: str = Field(VALIDATION_LIST, min_length=1, description=(
        "List file (under path) naming the validation split, e.g. validation_unseen_voice_list.txt: the synthetic "
        "corpus's validation clips of voices no training speaker has. Clips of validation_list.txt that it leaves "
        "out are dropped."))

    @field_validator("classes", mode="before")
    @classmethod
    def _class_count(cls, v: Any) -> Any:
        # The release's own vocabulary: 12 is the keyword task, 30 / 35 every word of v0.01 / v0.02.
        return {12: "keywords", "12": "keywords", 30: "all", "30": "all", 35: "all", "35": "all"}.get(v, v)

    @model_validator(mode="before")
    @classmethod
    def _count_matches(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and str(raw.get("classes")) in ("30", "35"):
            want = 1 if str(raw["classes"]) == "30" else 2
            if raw.get("version") not in (None, want):
                raise ValueError(f"classes: {raw['classes']} is every word of v0.0{want}, but version is {raw['version']}")
            raw = {**raw, "version": want}
        if isinstance(raw, dict) and str(raw.get("classes")) == "12" and len(raw.get("keywords", KEYWORDS)) != 10:
            raise ValueError("classes: 12 means 10 keywords + _unknown_ + _silence_; with other keywords write "
                             "classes: keywords")
        return raw


class SpeechCommandsTestOptions(DatasetOptions):
    name: Literal["speech_commands_test"] = "speech_commands_test"
    keywords: list[str] = Field(default_factory=lambda: list(KEYWORDS), min_length=1,
                                description="Keyword folders of the prepared test set.")


def _root(path: str) -> Path:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.path: {root} is not a directory; generate the default corpus with "
                                f"`pld data synth --out {path}` or point data.path at a Speech Commands copy")
    return root


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


def speaker_of(file_name: str) -> str:
    return file_name.split("_nohash_")[0] if "_nohash_" in file_name else ""


def _word_folders(root: Path, version: int | None) -> list[str]:
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    if not words:
        raise ValueError(f"data.path: {root} has no word folders (expected <root>/<word>/*.wav); "
                         "is it the prepared test set? then use name: speech_commands_test")
    if version is not None:
        expected = RELEASE_WORDS[version]
        missing, extra = sorted(set(expected) - set(words)), sorted(set(words) - set(expected))
        if missing or extra:
            other = 2 if version == 1 else 1
            hint = (f"it looks like v0.0{other}: set data.version: {other}" if set(words) == set(RELEASE_WORDS[other])
                    else "unset data.version to use the folders as they are")
            raise ValueError(f"data.version: {version}: {root} is not Speech Commands v0.0{version} "
                             f"(missing {missing or 'none'}, unexpected {extra or 'none'}); {hint}")
    return words


def _chosen_list(root: Path, field: str, name: str) -> set[str]:
    if not (root / name).is_file():
        raise FileNotFoundError(f"data.{field}: {root / name} does not exist; name a list file under {root} "
                                f"(e.g. {field.split('_')[0]}_unseen_voice_list.txt of `pld data synth`) or unset "
                                f"it to use {field}.txt")
    return read_list(root, name)


def _split_lists(root: Path, testing_list: str, validation_list: str = VALIDATION_LIST
                 ) -> tuple[set[str], set[str], set[str]]:
    """The validation and test clips, and the official validation and test clips left out of every
    split when ``validation_list`` / ``testing_list`` name a subset of them."""
    validation, testing = read_list(root, VALIDATION_LIST), read_list(root, TESTING_LIST)
    dropped: set[str] = set()
    if validation_list != VALIDATION_LIST:
        chosen = _chosen_list(root, "validation_list", validation_list)
        dropped, validation = validation - chosen, chosen
        log.info("data.validation_list %s: %d validation clip(s), %d clip(s) of %s not in it left out of every "
                 "split", validation_list, len(chosen), len(dropped), VALIDATION_LIST)
    if testing_list != TESTING_LIST:
        chosen = _chosen_list(root, "testing_list", testing_list)
        left_out = testing - chosen - validation
        log.info("data.testing_list %s: %d test clip(s), %d clip(s) of %s not in it left out of every split",
                 testing_list, len(chosen - validation), len(left_out), TESTING_LIST)
        dropped, testing = dropped | left_out, chosen
    return validation, testing, dropped - validation - testing


@register_dataset("speech_commands", SpeechCommandsOptions)
def build_speech_commands(opts: SpeechCommandsOptions) -> SourceIndex:
    root = _root(opts.path)
    words = _word_folders(root, opts.version)
    if opts.classes == "keywords":
        absent = [k for k in opts.keywords if k not in words]
        if absent:
            raise ValueError(f"data.keywords: folder(s) {absent} missing under {root}; found {words}")
    validation, testing, dropped = _split_lists(root, opts.testing_list, opts.validation_list)
    rows = []
    for word in words:
        for f in label_files(root / word):
            rel = f"{word}/{f.name}"
            if rel in dropped:
                continue
            split = "validation" if rel in validation else "test" if rel in testing else "train"
            rows.append(dict(clip_id=rel, path=str(f), start=WHOLE_FILE, word=word, speaker=speaker_of(f.name),
                             split=split))
    rows, rejected = reject_unstorable_names(rows)
    clips = pd.DataFrame(rows, columns=["clip_id", "path", "start", "word", "speaker", "split"])
    if clips.empty:
        raise ValueError(f"data.path: the word folders under {root} hold no files")
    sample_clip = num_samples(opts.clip_ms, opts.sample_rate)
    rng = np.random.default_rng(opts.seed)

    if opts.classes == "all":
        labels = ([SILENCE] if opts.silence_percentage > 0 else []) + words
        clips["label"] = clips["word"]
        parts = [clips]
        for split, group in clips.groupby("split", sort=True):
            n = int(math.ceil(len(group) * opts.silence_percentage / 100))
            if n:
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
    noise = sorted(str(p) for p in (root / NOISE_DIR).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    rejected["label"] = [w if opts.classes == "all" or w in opts.keywords else UNKNOWN for w in rejected["label"]]
    return SourceIndex(clips=index.reset_index(drop=True), labels=labels, noise_files=noise, rejected=rejected)


@register_dataset("speech_commands_test", SpeechCommandsTestOptions)
def build_speech_commands_test(opts: SpeechCommandsTestOptions) -> SourceIndex:
    """The prepared 12-class test set: every clip is in the ``test`` split."""
    root = _root(opts.path)
    labels = [SILENCE, UNKNOWN] + list(opts.keywords)
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    missing, extra = sorted(set(labels) - set(found)), sorted(set(found) - set(labels))
    if missing or extra:
        hint = (" — a raw release? use name: speech_commands" if (root / "validation_list.txt").exists()
                or (root / NOISE_DIR).is_dir() else "")
        raise ValueError(f"data.path: {root} is not a prepared Speech Commands test set: label folders missing "
                         f"{missing or 'none'}, unexpected {extra or 'none'}{hint}")
    rows = [dict(clip_id=f"{label}/{f.name}", path=str(f), start=WHOLE_FILE, label=label, speaker=speaker_of(f.name),
                 split="test")
            for label in labels for f in label_files(root / label)]
    if not rows:
        raise ValueError(f"data.path: {root}: the label folders hold no files")
    rows, rejected = reject_unstorable_names(rows)
    return SourceIndex(clips=pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), labels=labels, rejected=rejected)
