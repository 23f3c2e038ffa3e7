"""Tests for distill.data.synth: a tiny corpus is generated twice per module (workers=2 in
spawned processes, workers=1 in-process) and checked for layout, splits, determinism and
where the speech really is."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from distill.data import synth
from distill.data.synth import KEYWORDS, synthesize_corpus

SEED = 7
SPEAKERS = 6
UNKNOWN = ("bed", "marvin", "sheila")
WORDS = KEYWORDS + UNKNOWN
NOISE_SECONDS = 10.0
PARAMS = dict(seed=SEED, speakers=SPEAKERS, unknown_words=UNKNOWN, noise_seconds=NOISE_SECONDS,
              progress=False)
NAME_RE = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    meta = synthesize_corpus(out, workers=2, **PARAMS)
    return out, meta


@pytest.fixture(scope="module")
def corpus_one_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth1") / "corpus"
    synthesize_corpus(out, workers=1, **PARAMS)
    return out


@pytest.fixture(scope="module")
def manifest(corpus: tuple[Path, dict]) -> list[dict[str, str]]:
    with open(corpus[0] / "synth_manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _clip_files(out: Path) -> list[str]:
    return sorted(f"{w}/{p.name}" for w in WORDS for p in (out / w).iterdir())


def test_layout_and_wav_format(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    dirs = {p.name for p in out.iterdir() if p.is_dir()}
    assert dirs == set(WORDS) | {"_background_noise_"}
    # the in-progress marker and the temp file of the atomic write are gone
    assert {p.name for p in out.iterdir() if p.is_file()} == {
        "validation_list.txt", "testing_list.txt", "synth_manifest.csv", "synth.json"}
    files = _clip_files(out)
    assert len(files) == SPEAKERS * len(WORDS) == meta["clips"]
    for rel in files:
        assert NAME_RE.match(rel.split("/")[1]), rel
        info = sf.info(str(out / rel))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000), rel
    # one speaker id per speaker, same ids in every word folder
    ids = {rel.split("/")[1].split("_")[0] for rel in files}
    assert len(ids) == SPEAKERS
    for w in WORDS:
        assert {p.name.split("_")[0] for p in (out / w).iterdir()} == ids


def test_every_word_has_clips_and_counts_match(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    assert meta == json.loads((out / "synth.json").read_text())
    assert meta["words"] == list(WORDS) and meta["seed"] == SEED
    for w in WORDS:
        on_disk = len(list((out / w).glob("*.wav")))
        assert on_disk == SPEAKERS
        assert sum(meta["clips_per_word"][w].values()) == on_disk


def test_splits_are_speaker_disjoint(corpus: tuple[Path, dict], manifest: list[dict[str, str]]) -> None:
    out, meta = corpus
    val, test = _lines(out / "validation_list.txt"), _lines(out / "testing_list.txt")
    assert val == sorted(val) and test == sorted(test)
    assert val and test and not set(val) & set(test)
    for rel in val + test:
        assert (out / rel).is_file(), rel
    train = set(_clip_files(out)) - set(val) - set(test)  # unlisted = train, as in Speech Commands

    def speakers(paths: set[str] | list[str]) -> set[str]:
        return {p.split("/")[1].split("_")[0] for p in paths}

    s_train, s_val, s_test = speakers(train), speakers(val), speakers(test)
    assert s_train and s_val and s_test
    assert not (s_train & s_val) and not (s_train & s_test) and not (s_val & s_test)
    # every clip of a validation/test speaker is listed
    assert len(val) == len(s_val) * len(WORDS) and len(test) == len(s_test) * len(WORDS)
    split_of = {r["path"]: r["split"] for r in manifest}
    assert {p for p, s in split_of.items() if s == "validation"} == set(val)
    assert {p for p, s in split_of.items() if s == "testing"} == set(test)
    assert {p for p, s in split_of.items() if s == "train"} == train
    assert meta["speakers_per_split"] == {"train": len(s_train), "validation": len(s_val),
                                          "testing": len(s_test)}


def test_background_noise(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    files = sorted((out / "_background_noise_").glob("*.wav"))
    assert len(files) >= 4 and len(meta["noise_files"]) == len(files)
    signals = []
    for f in files:
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == NOISE_SECONDS * 16000
        x, _ = sf.read(str(f))
        assert 0.03 < np.sqrt(np.mean(x ** 2)) < 0.3, f.name
        signals.append(x)
    assert len({x[:1000].tobytes() for x in signals}) == len(signals)  # all different


def test_deterministic_across_worker_counts(corpus: tuple[Path, dict], corpus_one_worker: Path) -> None:
    out2, out1 = corpus[0], corpus_one_worker
    files = _clip_files(out2)
    assert files == _clip_files(out1)
    files += ["validation_list.txt", "testing_list.txt", "synth_manifest.csv"]
    files += [f"_background_noise_/{p.name}" for p in (out2 / "_background_noise_").iterdir()]
    different = [f for f in files if (out2 / f).read_bytes() != (out1 / f).read_bytes()]
    assert not different
    m1, m2 = (json.loads((o / "synth.json").read_text()) for o in (out1, out2))
    for m in (m1, m2):
        m.pop("elapsed_s"), m.pop("workers")
    assert m1 == m2


def test_speakers_stable_for_seed() -> None:
    assert synth.make_speakers(SEED, 8)[:3] == synth.make_speakers(SEED, 3)
    assert synth.make_speakers(SEED, 3) != synth.make_speakers(SEED + 1, 3)
    with pytest.raises(ValueError):
        synth.assign_splits(synth.make_speakers(SEED, 2), 0.1, 0.1)  # no room for train


def test_long_word_is_spoken_faster_to_fit() -> None:
    speech, rate = synth.speak_word("marvin", "en-us", "m3", 80, 50)  # 80 wpm: ~1.1 s as spoken
    assert rate > 80 and len(speech) <= synth.MAX_SPEECH_S * 16000
    assert np.sqrt(np.mean(speech ** 2)) > 0.01


def test_speech_offsets_vary(manifest: list[dict[str, str]]) -> None:
    start = np.array([float(r["speech_start_ms"]) for r in manifest])
    end = np.array([float(r["speech_end_ms"]) for r in manifest])
    assert (start >= 0).all() and (end <= 1000).all() and (end - start > 100).all()
    assert start.min() < 100 and start.max() > 400  # near both edges of the clip
    centre = (start + end) / 2
    assert np.mean(np.abs(centre - 500) < 50) < 0.5  # not centred
    # a 500 ms crop at the start of the clip misses all of some words
    assert (start > 500).sum() >= 3


def test_manifest_values(manifest: list[dict[str, str]]) -> None:
    assert tuple(manifest[0]) == synth.MANIFEST_COLUMNS
    for r in manifest:
        assert -13.0 <= float(r["gain_db"]) <= 0.0
        assert 5.0 <= float(r["snr_db"]) <= 30.0
        assert r["voice"] in synth.VOICES and r["variant"] in synth.VARIANTS
        assert r["noise_file"] in {f"{k}.wav" for k in synth.NOISE_KINDS}
    assert len({r["voice"] + "+" + r["variant"] for r in manifest}) == SPEAKERS


def test_speech_is_where_the_manifest_says(corpus: tuple[Path, dict],
                                           manifest: list[dict[str, str]]) -> None:
    out = corpus[0]
    ratios, peaks = [], []
    for r in manifest:
        x, sr = sf.read(str(out / r["path"]))
        a, b = int(float(r["speech_start_ms"]) * sr / 1000), int(float(r["speech_end_ms"]) * sr / 1000)
        inside = x[a:b]
        outside = np.concatenate([x[:a], x[b:]])
        rms_in = np.sqrt(np.mean(inside ** 2))
        assert rms_in > 0.01, r["path"]  # the word is not silence (> -40 dBFS)
        if len(outside) >= 1600:  # >= 100 ms of noise-only signal to compare with
            ratios.append(rms_in / np.sqrt(np.mean(outside ** 2)))
        peaks.append(np.abs(x).max())
    ratios = np.array(ratios)
    assert len(ratios) > 0.8 * len(manifest)
    # SNR >= 5 dB => speech+noise RMS >= ~2x noise RMS; allow a little slack
    assert np.mean(ratios > 1.5) > 0.95 and np.median(ratios) > 3
    assert max(peaks) < 1.0  # never clipped (PCM_16 full scale reads back as < 1.0)


def test_existing_corpus_and_overwrite(tmp_path: Path, corpus: tuple[Path, dict]) -> None:
    with pytest.raises(FileExistsError, match="synth.json"):
        synthesize_corpus(corpus[0], **PARAMS)
    foreign = tmp_path / "real_dataset"
    (foreign / "yes").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize_corpus(foreign, **PARAMS, overwrite=True)
    assert (foreign / "yes").is_dir()  # untouched
    small = dict(seed=1, speakers=3, noise_seconds=2.0, workers=1, progress=False)
    out = tmp_path / "small"
    synthesize_corpus(out, unknown_words=("bed",), **small)
    meta = synthesize_corpus(out, unknown_words=("cat",), overwrite=True, **small)
    assert not (out / "bed").exists() and len(list((out / "cat").glob("*.wav"))) == 3
    assert meta["clips"] == 3 * (len(KEYWORDS) + 1)


def test_clear_errors_when_espeak_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import espeakng_loader

    out = tmp_path / "never"
    private_tmp = tmp_path / "tmp"  # where synthesize_corpus builds its temporary voice dir
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with monkeypatch.context() as m:
        m.setattr(synth, "VARIANTS", ("no-such-variant",))
        with pytest.raises(RuntimeError, match="no-such-variant"):
            synthesize_corpus(out, **PARAMS)
    with monkeypatch.context() as m:
        m.setattr(synth, "VOICES", ("en-xx",))
        with pytest.raises(RuntimeError, match="en-xx"):
            synthesize_corpus(out, **PARAMS)
    with monkeypatch.context() as m:
        m.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libnope.so"))
        synth.espeak_paths.cache_clear()
        try:
            with pytest.raises(RuntimeError, match="espeakng-loader"):
                synthesize_corpus(out, **PARAMS)
        finally:
            synth.espeak_paths.cache_clear()
    assert not out.exists()  # nothing is written before the checks pass
    assert not list(private_tmp.iterdir())  # the temporary voice dir was removed every time
