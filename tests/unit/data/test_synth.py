"""Tests for distill.corpus (writer, rendering, speaking): a tiny corpus with the default options (loudest placement,
held-out voices, slow speaking rates) is generated twice per module (workers=2 in spawned
processes, workers=1 in-process) and checked for layout, splits, determinism, timing
statistics and where the speech really is."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from distill.corpus import espeak, layout, options, rendering, sound, speaking, summary, voices
from distill.corpus.options import CorpusOptions
from distill.corpus.speakers import Speaker
from distill.corpus.writer import synthesize_corpus
from distill.names import KEYWORDS

SEED = 7
SPEAKERS = 8
UNKNOWN = ("bed", "marvin", "sheila")
WORDS = KEYWORDS + UNKNOWN
NOISE_SECONDS = 10.0
# 0.25: two validation and two test speakers, so each split has a held-out and a seen voice
# espeak only: the engines and unseen-engine parts have their own tests (test_synth_engines.py)
OPTIONS = CorpusOptions(seed=SEED, speakers=SPEAKERS, unknown_words=UNKNOWN, noise_seconds=NOISE_SECONDS,
                        val_fraction=0.25, test_fraction=0.25, engines={"espeak": 1},
                        unseen_engine_speakers=0)
LISTS = ("validation_list.txt", "testing_list.txt", "validation_unseen_voice_list.txt",
         "testing_unseen_voice_list.txt")
NAME_RE = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    meta = synthesize_corpus(out, OPTIONS, workers=2, progress=False)
    return out, meta


@pytest.fixture(scope="module")
def corpus_one_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth1") / "corpus"
    synthesize_corpus(out, OPTIONS, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def manifest(corpus: tuple[Path, dict]) -> list[dict[str, str]]:
    with open(corpus[0] / "synth_manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _clip_files(out: Path) -> list[str]:
    return sorted(f"{w}/{p.name}" for w in WORDS for p in (out / w).iterdir())


def _speakers(paths: set[str] | list[str]) -> set[str]:
    return {p.split("/")[1].split("_")[0] for p in paths}


def test_layout_and_wav_format(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    dirs = {p.name for p in out.iterdir() if p.is_dir()}
    assert dirs == set(WORDS) | {"_background_noise_"}
    # the in-progress marker and the temp file of the atomic write are gone
    assert {p.name for p in out.iterdir() if p.is_file()} == {*LISTS, "synth_manifest.csv", "synth.json"}
    files = _clip_files(out)
    assert len(files) == SPEAKERS * len(WORDS) == meta["clips"]
    for rel in files:
        assert NAME_RE.match(rel.split("/")[1]), rel
        info = sf.info(str(out / rel))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000), rel
    # one speaker id per speaker, same ids in every word folder
    ids = _speakers(files)
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
    s_train, s_val, s_test = _speakers(train), _speakers(val), _speakers(test)
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


def test_heldout_voices_are_never_heard_in_training(corpus: tuple[Path, dict],
                                                    manifest: list[dict[str, str]]) -> None:
    out, meta = corpus
    held_val, held_test = meta["heldout_voices"]["validation"], meta["heldout_voices"]["testing"]
    assert len(held_val) == 1 and len(held_test) == 2 and not set(held_val) & set(held_test)
    voice_of = {r["path"]: r["voice"] for r in manifest}
    train_voices = {r["voice"] for r in manifest if r["split"] == "train"}
    assert not train_voices & {*held_val, *held_test}
    # voices are dealt round-robin: the training speakers cover all training voices they can
    n_train = meta["splits"]["train"]["speakers"]
    assert len(train_voices) == min(n_train, len(voices.VOICES) - 3)
    for split, held in (("validation", held_val), ("testing", held_test)):
        listed = set(_lines(out / f"{split}_list.txt"))
        unseen = _lines(out / f"{split}_unseen_voice_list.txt")
        assert unseen == sorted(unseen) and unseen and set(unseen) < listed
        assert {voice_of[p] for p in unseen} <= set(held)  # exactly the clips of held-out voices
        assert {p for p in listed if voice_of[p] in held} == set(unseen)
        seen = listed - set(unseen)  # a new speaker of an accent heard in training
        assert seen and {voice_of[p] for p in seen} <= train_voices
        assert {r["path"] for r in manifest if r["unseen_voice"] == "1" and r["split"] == split} == set(unseen)
        info = meta["splits"][split]
        assert info["unseen_voice_speakers"] == len(_speakers(unseen)) == 1
        assert info["speakers"] == len(_speakers(listed)) == 2
        assert sum(info["voices"].values()) == info["speakers"]
    assert set(meta["splits"]["train"]["voices"]) == {f"espeak:{v}" for v in train_voices}
    assert not [r for r in manifest if r["split"] == "train" and r["unseen_voice"] != "0"]


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
    files += [*LISTS, "synth_manifest.csv"]
    files += [f"_background_noise_/{p.name}" for p in (out2 / "_background_noise_").iterdir()]
    different = [f for f in files if (out2 / f).read_bytes() != (out1 / f).read_bytes()]
    assert not different
    m1, m2 = (json.loads((o / "synth.json").read_text()) for o in (out1, out2))
    for m in (m1, m2):
        m.pop("elapsed_s"), m.pop("workers")
    assert m1 == m2


def test_timing_statistics_match_the_manifest(corpus: tuple[Path, dict], manifest: list[dict[str, str]]) -> None:
    meta = corpus[1]
    start = np.array([float(r["speech_start_ms"]) for r in manifest])
    end = np.array([float(r["speech_end_ms"]) for r in manifest])
    cut = np.array([float(r["speech_cut_ms"]) for r in manifest])
    word = end - start
    stats = meta["stats"]
    assert stats == summary.timing_stats(manifest)  # the CSV's strings give the same numbers
    assert stats["word_ms"]["median"] == round(float(np.median(word)), 1) >= 500  # read aloud slowly
    assert stats["word_ms"]["p10"] < stats["word_ms"]["median"] < stats["word_ms"]["p90"]
    assert stats["word_ms"]["share_over_500ms"] == round(float(np.mean(word > 500)), 4) > 0.5
    assert stats["share_cut_by_clip_edge"] == round(float(np.mean(cut > 0)), 4)
    centred = (start >= 250) & (end <= 750) & (cut == 0)
    assert stats["share_whole_word_in_center_500ms"] == round(float(np.mean(centred)), 4) < 0.5
    p = meta["params"]
    assert (p["placement"], p["rate_range"], p["vtl_range"]) == ("loudest", list(options.RATE_RANGE),
                                                                 list(options.VTL_RANGE))
    assert (p["pause_ms"], p["center_jitter_ms"]) == (list(options.PAUSE_MS), options.CENTER_JITTER_MS)
    assert (p["heldout_val_voices"], p["heldout_test_voices"]) == (1, 2)


def test_long_word_is_spoken_faster_to_fit() -> None:
    speech, rate = speaking.speak_word("marvin", "en-us", "m3", 80, 50)  # 80 wpm: ~1.1 s as spoken
    assert rate > 80 and len(speech) <= speaking.MAX_SPEECH_S * 16000
    assert np.sqrt(np.mean(speech ** 2)) > 0.01
    # a lower vocal-tract factor lengthens the word: duration / factor
    short, _ = speaking.speak_word("yes", "en-us", "m3", 150, 50, vtl=1.1)
    long, _ = speaking.speak_word("yes", "en-us", "m3", 150, 50, vtl=0.9)
    assert 1.15 < len(long) / len(short) < 1.30


def test_manifest_values(manifest: list[dict[str, str]]) -> None:
    assert tuple(manifest[0]) == layout.MANIFEST_COLUMNS
    for r in manifest:
        assert -13.0 <= float(r["gain_db"]) <= 0.0
        assert 5.0 <= float(r["snr_db"]) <= 30.0
        assert r["voice"] in voices.VOICES and r["variant"] in voices.VARIANTS
        assert r["noise_file"] in {f"{k}.wav" for k in sound.NOISE_KINDS}
        assert 0.9 - 0.002 <= float(r["vtl_factor"]) <= 1.1 + 0.002
        assert 80 <= int(r["rate"]) <= 450 and r["unseen_voice"] in ("0", "1")
        assert 0 <= float(r["speech_start_ms"]) < float(r["speech_end_ms"]) <= 1000
        assert float(r["speech_cut_ms"]) >= 0
    assert len({r["voice"] + "+" + r["variant"] for r in manifest}) == SPEAKERS
    assert len({r["vtl_factor"] for r in manifest}) > SPEAKERS // 2


@pytest.fixture
def one_torch_thread():
    """As in the workers: resampling is bit-reproducible with one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loudest_clip_is_the_loudest_second(corpus: tuple[Path, dict], manifest: list[dict[str, str]],
                                            tmp_path: Path, one_torch_thread: None) -> None:
    """Re-render a few clips: the file is the recording's highest-energy 1 s window, and the
    manifest's position of the word is where the word is inside that window."""
    out, meta = corpus
    noises = [(n.split("/")[1], sf.read(str(out / n), dtype="float64")[0]) for n in meta["noise_files"]]
    data_path = espeak.make_voice_dir(tmp_path / "espeak", voices.VOICES)  # like the corpus's voice dir
    speakers = {s["id"]: Speaker(**s) for s in meta["speakers"]}
    rows = {r["path"]: r for r in manifest}
    for rel in sorted(rows)[::20]:
        r = rows[rel]
        word, k = r["word"], int(rel.split("_nohash_")[1][:-4])
        rec, a, b, _ = rendering.render_recording(SEED, speakers[r["speaker"]], word, k, noises,
                                              options.RenderOptions(), data_path)
        assert len(rec) >= 16000 and a >= 1600  # a leading pause of >= 100 ms
        energy = np.array([np.sum(rec[s:s + 16000] ** 2) for s in range(len(rec) - 16000 + 1)])
        start = sound.loudest_window(rec)
        assert energy[start] >= energy.max() * (1 - 1e-9)
        clip, _ = sf.read(str(out / rel))
        window = rec[start:start + 16000]
        scale = min(1.0, sound.PEAK_LIMIT / np.abs(window).max())
        assert np.abs(clip - window * scale).max() < 1.5 / 32767  # the file is that window (PCM_16)
        a_in, b_in = np.clip([a - start, b - start], 0, 16000)
        assert float(r["speech_start_ms"]) == pytest.approx(a_in / 16)
        assert float(r["speech_end_ms"]) == pytest.approx(b_in / 16)
        assert float(r["speech_cut_ms"]) == pytest.approx((b - a - (b_in - a_in)) / 16)


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
    assert len(ratios) > 0.5 * len(manifest)
    # SNR >= 5 dB => speech+noise RMS >= ~2x noise RMS; allow a little slack
    assert np.mean(ratios > 1.5) > 0.95 and np.median(ratios) > 3
    assert max(peaks) < 1.0  # never clipped (PCM_16 full scale reads back as < 1.0)


def test_speech_commands_testing_list_option(corpus: tuple[Path, dict]) -> None:
    from distill.data.speech_commands import SpeechCommandsOptions, build_speech_commands

    out = corpus[0]
    val, test = set(_lines(out / "validation_list.txt")), set(_lines(out / "testing_list.txt"))
    unseen = set(_lines(out / "testing_unseen_voice_list.txt"))
    common = dict(path=str(out), classes="all", silence_percentage=0)

    def split_of(**opts: str) -> dict[str, str]:
        clips = build_speech_commands(SpeechCommandsOptions(**common, **opts)).clips
        return dict(zip(clips["clip_id"], clips["split"]))

    default = split_of()
    assert {c for c, s in default.items() if s == "test"} == test
    only_unseen = split_of(testing_list="testing_unseen_voice_list.txt")
    assert {c for c, s in only_unseen.items() if s == "test"} == unseen
    assert {c for c, s in only_unseen.items() if s == "validation"} == val
    assert set(only_unseen) == set(default) - (test - unseen)  # seen-voice test clips: in no split
    assert {c for c, s in only_unseen.items() if s == "train"} == {c for c, s in default.items() if s == "train"}
    with pytest.raises(FileNotFoundError, match="data.testing_list: .*no_such_list.txt"):
        split_of(testing_list="no_such_list.txt")

    unseen_val = set(_lines(out / "validation_unseen_voice_list.txt"))
    assert unseen_val and unseen_val < val
    only_unseen_val = split_of(validation_list="validation_unseen_voice_list.txt")
    assert {c for c, s in only_unseen_val.items() if s == "validation"} == unseen_val
    assert {c for c, s in only_unseen_val.items() if s == "test"} == test
    assert set(only_unseen_val) == set(default) - (val - unseen_val)  # seen-voice validation clips: in no split
    assert {c for c, s in only_unseen_val.items() if s == "train"} == {c for c, s in default.items() if s == "train"}
    with pytest.raises(FileNotFoundError, match="data.validation_list: .*no_such_list.txt"):
        split_of(validation_list="no_such_list.txt")


def test_existing_corpus_and_overwrite(tmp_path: Path, corpus: tuple[Path, dict]) -> None:
    with pytest.raises(FileExistsError, match="synth.json"):
        synthesize_corpus(corpus[0], OPTIONS, progress=False)
    foreign = tmp_path / "real_dataset"
    (foreign / "yes").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize_corpus(foreign, OPTIONS, progress=False, overwrite=True)
    assert (foreign / "yes").is_dir()  # untouched
    small = dict(seed=1, speakers=3, noise_seconds=2.0, engines={"espeak": 1}, unseen_engine_speakers=0)
    out = tmp_path / "small"
    synthesize_corpus(out, CorpusOptions(unknown_words=("bed",), **small), workers=1, progress=False)
    meta = synthesize_corpus(out, CorpusOptions(unknown_words=("cat",), **small), workers=1, progress=False,
                             overwrite=True)
    assert not (out / "bed").exists() and len(list((out / "cat").glob("*.wav"))) == 3
    assert meta["clips"] == 3 * (len(KEYWORDS) + 1)
    # 3 speakers: one each for train, validation (a held-out voice) and test (another one)
    assert [meta["splits"][s]["unseen_voice_speakers"] for s in layout.SPLITS] == [0, 1, 1]


def test_clear_errors_when_espeak_is_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import espeakng_loader

    out = tmp_path / "never"
    private_tmp = tmp_path / "tmp"  # where synthesize_corpus builds its temporary voice dir
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    with monkeypatch.context() as m:
        m.setattr(voices, "VARIANTS", ("no-such-variant",))  # where voices are dealt
        with pytest.raises(RuntimeError, match="no-such-variant"):
            synthesize_corpus(out, OPTIONS, progress=False)
    with monkeypatch.context() as m:
        m.setattr(speaking, "VOICES", voices.VOICES + ("en-xx",))  # where the voice dir is built
        with pytest.raises(RuntimeError, match="en-xx"):
            synthesize_corpus(out, OPTIONS, progress=False)
    with monkeypatch.context() as m:
        m.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libnope.so"))
        espeak.espeak_paths.cache_clear()
        try:
            with pytest.raises(RuntimeError, match="espeakng-loader"):
                synthesize_corpus(out, OPTIONS, progress=False)
        finally:
            espeak.espeak_paths.cache_clear()
    assert not out.exists()  # nothing is written before the checks pass
    assert not list(private_tmp.iterdir())  # the temporary voice dir was removed every time
