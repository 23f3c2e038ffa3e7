"""Datasets as users have them: Speech Commands releases (raw and the prepared test set), any
folder of labelled audio, plug-ins, and malformed files that end up quarantined — never lost."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import tone, write_malformed, write_sc_layout
from distill.cli import main
from distill.config import ConfigError, load_config
from distill.data import base
from distill.data.audio import ClipPolicy, load_clip
from distill.data.base import SILENCE, UNKNOWN, build_source_index, parse_data_spec, parse_dataset_options
from distill.data.check import DataError, check_bad_fraction, scan
from distill.data.folder import hash_split
from distill.data.speech_commands import KEYWORDS, V1_WORDS, V2_WORDS

SPEAKERS = [f"{i:08x}" for i in range(6)]


def index_for(**raw):
    options = parse_dataset_options(raw)
    return options, build_source_index(options)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    for version, words in ((1, V1_WORDS), (2, V2_WORDS)):
        write_sc_layout(root / f"v{version}", words, SPEAKERS, val={SPEAKERS[0]}, test={SPEAKERS[1]})
    return root


# --- Speech Commands, raw releases ---------------------------------------------------------


@pytest.mark.parametrize("version,words", [(1, V1_WORDS), (2, V2_WORDS)])
def test_release_versions_and_their_class_spaces(releases, version, words):
    root = str(releases / f"v{version}")
    _, idx = index_for(name="speech_commands", path=root, version=version, classes=12)
    assert idx.labels == [SILENCE, UNKNOWN, *KEYWORDS]
    others = set(words) - set(KEYWORDS)
    unknown = idx.clips[idx.clips.label == UNKNOWN]
    assert {c.split("/")[0] for c in unknown.clip_id} <= others
    for split, n_speakers in (("train", 4), ("validation", 1), ("test", 1)):
        part = idx.clips[idx.clips.split == split]
        kw = n_speakers * len(KEYWORDS)
        assert (part.label.isin(KEYWORDS)).sum() == kw
        assert (part.label == UNKNOWN).sum() == math.ceil(kw * 0.10)
        assert (part.label == SILENCE).sum() == math.ceil(kw * 0.10)
    assert set(idx.clips[idx.clips.split == "validation"].speaker) <= {SPEAKERS[0], ""}

    opts, full = index_for(name="speech_commands", path=root, classes=len(words))
    assert opts.version == version and full.labels == [SILENCE] + sorted(words)
    assert set(full.clips.label) == set(full.labels)
    _, no_silence = index_for(name="speech_commands", path=root, classes="all", silence_percentage=0)
    assert no_silence.labels == sorted(words) and SILENCE not in set(no_silence.clips.label)
    assert (no_silence.clips.speaker.str.len() == 8).all()  # <speaker>_nohash_<k>.wav → speaker column


def test_wrong_release_and_class_count_are_named(releases):
    with pytest.raises(ValueError, match=r"not Speech Commands v0.02.*set data.version: 1"):
        index_for(name="speech_commands", path=str(releases / "v1"), version=2)
    with pytest.raises(ValueError, match="every word of v0.01, but version is 2"):
        parse_dataset_options({"name": "speech_commands", "path": "x", "classes": 30, "version": 2})
    with pytest.raises(ValueError, match="classes: 12 means 10 keywords"):
        parse_dataset_options({"name": "speech_commands", "path": "x", "classes": 12, "keywords": ["yes", "no"]})


def test_unknown_percentage_is_seeded(releases):
    root = str(releases / "v2")
    _, a = index_for(name="speech_commands", path=root, unknown_percentage=25, silence_percentage=5, seed=1)
    _, b = index_for(name="speech_commands", path=root, unknown_percentage=25, silence_percentage=5, seed=1)
    _, c = index_for(name="speech_commands", path=root, unknown_percentage=25, silence_percentage=5, seed=2)
    train = a.clips[a.clips.split == "train"]
    assert (train.label == UNKNOWN).sum() == 10 and (train.label == SILENCE).sum() == 2  # ceil(25 % / 5 % of 40)
    assert a.clips.equals(b.clips) and not a.clips.equals(c.clips)


# --- Speech Commands, the prepared test set --------------------------------------------------


@pytest.fixture
def prepared_test(tmp_path):
    root = tmp_path / "sc_test"
    for i, label in enumerate([SILENCE, UNKNOWN, *KEYWORDS]):
        (root / label).mkdir(parents=True)
        for k in range(3):
            sf.write(root / label / f"{SPEAKERS[k]}_nohash_{i}.wav", tone(1.0, 16000, 200 + 40 * i), 16000,
                     subtype="PCM_16")
    sf.write(root / "yes" / "short_nohash_0.wav", tone(0.8, 16000), 16000, subtype="PCM_16")
    return root


def test_prepared_test_set_is_a_test_only_dataset(prepared_test):
    options, idx = index_for(name="speech_commands_test", path=str(prepared_test))
    assert idx.labels == [SILENCE, UNKNOWN, *KEYWORDS]
    assert set(idx.clips.split) == {"test"} and len(idx.clips) == 37
    assert set(idx.clips.speaker) == set(SPEAKERS[:3]) | {"short"}
    result = scan(idx, options)
    assert len(result.good) == 37 and result.applied == {"padded": 1}


def test_prepared_test_set_layout_errors(prepared_test, releases):
    with pytest.raises(ValueError, match="raw release\\? use name: speech_commands"):
        index_for(name="speech_commands_test", path=str(releases / "v1"))
    (prepared_test / UNKNOWN).rename(prepared_test / "other")
    with pytest.raises(ValueError, match=r"missing \['_unknown_'\], unexpected \['other'\]"):
        index_for(name="speech_commands_test", path=str(prepared_test))


# --- any folder of labelled audio ------------------------------------------------------------

MIXED = {  # label/file: (seconds, rate, channels)
    "bark/a_take1.wav": (1.0, 16000, 1), "bark/a_take2.flac": (5.0, 44100, 2), "bark/b_take1.ogg": (0.3, 8000, 1),
    "siren/a_take1.wav": (2.0, 48000, 1), "siren/c_take1.flac": (1.0, 22050, 6), "siren/c_take2.wav": (0.5, 16000, 2),
    "rain/b_take1.ogg": (3.0, 32000, 1), "rain/d_take1.wav": (1.0, 16000, 1),
}


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / "sounds"
    for rel, (seconds, rate, channels) in MIXED.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(seconds, rate, 330, channels), rate)
    return root


def test_folder_of_mixed_rates_channels_and_lengths(mixed_folder):
    options, idx = index_for(name="folder", path=str(mixed_folder), clip_ms=1000)
    assert idx.labels == ["bark", "rain", "siren"] and len(idx.clips) == len(MIXED)
    result = scan(idx, options, keep_waveforms=True)
    assert result.quarantine.empty and result.waveforms.shape == (len(MIXED), 16000)
    want = {"resampled": sum(r != 16000 for _, r, _ in MIXED.values()),
            "downmixed": sum(c > 1 for _, _, c in MIXED.values()),
            "padded": sum(s < 1 for s, _, _ in MIXED.values()),
            "cropped": sum(s > 1 for s, _, _ in MIXED.values())}
    assert dict(result.applied) == want
    rms = np.sqrt(np.mean((result.waveforms / 32768.0) ** 2, axis=1))
    assert np.allclose(rms[result.good.clip_id == "bark/a_take1.wav"], 0.3 / np.sqrt(2), atol=0.01)


def test_length_policies_place_the_audio(tmp_path):
    steps = np.concatenate([np.full(16000, v, np.float32) for v in (0.1, 0.5, 0.9)])  # 3 s: one level a second
    sf.write(tmp_path / "long.wav", steps, 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", np.full(8000, 0.5, np.float32), 16000, subtype="FLOAT")
    level = lambda w: float(np.median(w / 32768.0))  # noqa: E731
    clip = lambda name, **p: load_clip(str(tmp_path / name), -1, 16000, 16000, ClipPolicy(**p), key=name)  # noqa: E731
    assert level(clip("long.wav", too_long="crop_start").waveform) == pytest.approx(0.1, abs=1e-3)
    assert level(clip("long.wav", too_long="crop_center").waveform) == pytest.approx(0.5, abs=1e-3)
    random = clip("long.wav", too_long="crop_random")
    assert random.applied == ["cropped"] and 0 <= random.start <= 32000
    assert random.start == clip("long.wav", too_long="crop_random").start  # seeded by the clip, not by chance
    end, center = clip("short.wav", too_short="pad_end").waveform, clip("short.wav", too_short="pad_center").waveform
    assert (end[8000:] == 0).all() and end[:8000].min() > 0
    assert (center[:4000] == 0).all() and (center[12000:] == 0).all() and center[4000:12000].min() > 0


def test_skip_policies_quarantine_with_the_reason(mixed_folder):
    policy = dict(resample=False, downmix=False, too_short="skip", too_long="skip")
    options, idx = index_for(name="folder", path=str(mixed_folder), policy=policy, max_bad_fraction=1)
    result = scan(idx, options)
    problems = dict(zip(result.quarantine.clip_id, result.quarantine.problem))
    assert set(result.good.clip_id) == {"bark/a_take1.wav", "rain/d_take1.wav"}
    assert problems["bark/a_take2.flac"].startswith("sample rate 44100 Hz")
    assert problems["siren/c_take2.wav"].startswith("2 channels")
    assert problems["bark/b_take1.ogg"].startswith("sample rate")  # the rate is checked before the length
    options, idx = index_for(name="folder", path=str(mixed_folder), policy={"too_short": "skip", "too_long": "skip"})
    problems = dict(zip(*(lambda q: (q.clip_id, q.problem))(scan(idx, options).quarantine)))
    assert problems["siren/c_take2.wav"].startswith("too short: 500 ms")
    assert problems["rain/b_take1.ogg"].startswith("too long: 3000 ms")


def test_folder_splits_hash_groups_and_lists(tmp_path):
    root = tmp_path / "many"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for speaker in range(40):
            for take in range(3):
                sf.write(root / label / f"spk{speaker:02d}_take{take}.wav", tone(0.1, 16000), 16000, subtype="PCM_16")
    _, by_name = index_for(name="folder", path=str(root), validation_percentage=20, test_percentage=20)
    _, again = index_for(name="folder", path=str(root), validation_percentage=20, test_percentage=20)
    assert by_name.clips.equals(again.clips)
    shares = by_name.clips.split.value_counts(normalize=True)
    assert 0.1 < shares["validation"] < 0.3 and 0.1 < shares["test"] < 0.3
    assert all(hash_split(name, 20, 20) == split for name, split in
               zip(by_name.clips.clip_id.str.split("/").str[1], by_name.clips.split))
    _, grouped = index_for(name="folder", path=str(root), group_pattern=r"^(spk\d+)_")
    assert (grouped.clips.groupby("speaker").split.nunique() == 1).all()  # a speaker never spans two splits
    assert grouped.clips.speaker.nunique() == 40
    (root / "validation_list.txt").write_text("a/spk00_take0.wav\nb/spk01_take2.wav\n")
    (root / "testing_list.txt").write_text("a/spk03_take1.wav\n")
    _, listed = index_for(name="folder", path=str(root))
    assert listed.clips.split.value_counts().to_dict() == {"train": 237, "validation": 2, "test": 1}


def test_folder_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        index_for(name="folder", path=str(tmp_path / "nowhere"))
    (tmp_path / "flat").mkdir()
    sf.write(tmp_path / "flat" / "x.wav", tone(1, 16000), 16000)
    with pytest.raises(ValueError, match="has no label folders"):
        index_for(name="folder", path=str(tmp_path / "flat"))
    (tmp_path / "flat" / "dog").mkdir()
    with pytest.raises(ValueError, match="dog: label folder is empty"):
        index_for(name="folder", path=str(tmp_path / "flat"))
    sf.write(tmp_path / "flat" / "dog" / "x.wav", tone(1, 16000), 16000)
    with pytest.raises(ValueError, match=r"data.labels: folder\(s\) \['cat'\] missing"):
        index_for(name="folder", path=str(tmp_path / "flat"), labels=["dog", "cat"])
    (tmp_path / "flat" / "testing_list.txt").write_text("cat/x.wav\n")
    with pytest.raises(FileNotFoundError, match=r"testing_list.txt: names label folder\(s\) \['cat'\]"):
        index_for(name="folder", path=str(tmp_path / "flat"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: folder, path: {tmp_path}, group_pattern: '(unclosed'}}\n")
    with pytest.raises(ConfigError, match="data.group_pattern.*not a valid regular expression"):
        load_config(cfg)
    with pytest.raises(ValueError, match="unknown dataset 'nope'; registered datasets: .*folder.*speech_commands"):
        parse_data_spec("nope:/x")
    with pytest.raises(ValueError, match="expected NAME:PATH"):
        parse_data_spec("folder")


# --- malformed files: quarantined, counted, never lost ---------------------------------------


@pytest.fixture
def dirty_folder(tmp_path):
    root = tmp_path / "dirty"
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True)
        for k in range(20):
            sf.write(root / label / f"ok{k}.wav", tone(1.0, 16000), 16000, subtype="PCM_16")
    expected = {f"yes/{name}": reason for name, reason in write_malformed(root / "yes").items()}
    (root / "no" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not data
    return root, expected


def test_every_malformed_file_is_quarantined_with_its_reason(dirty_folder):
    root, expected = dirty_folder
    assert len(expected) >= 20
    options, idx = index_for(name="folder", path=str(root))
    result = scan(idx, options)
    assert result.total == len(idx.clips) == 40 + len(expected)  # nothing vanished
    assert len(result.good) == 40
    problems = dict(zip(result.quarantine.clip_id, result.quarantine.problem))
    assert set(problems) == set(expected)
    for clip_id, reason in expected.items():
        assert reason in problems[clip_id], (clip_id, problems[clip_id])
    assert result.quarantine.path.str.startswith(str(root)).all()
    with pytest.raises(DataError, match=r"22 of 62 files \(35.5%\).*data.max_bad_fraction \(5.0%\)"):
        check_bad_fraction(len(result.quarantine), result.total, options, "q.csv")


def test_pld_data_check_reports_counts_and_every_problem(dirty_folder, capsys, sc_root):
    root, expected = dirty_folder
    assert main(["data", "check", f"folder:{root}"]) == 1  # problems: scripts can gate on the exit code
    out = capsys.readouterr().out
    assert "problems: 22" in out and "total" in out
    for clip_id in expected:
        assert str(root / clip_id) in out
    assert main(["data", "check", f"folder:{root}", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 62 and report["clips"] == 40 and len(report["problems"]) == 22
    assert sum(report["counts"].values()) == 40
    spec = root.parent / "sc.yaml"
    spec.write_text(f"data:\n  name: speech_commands\n  path: {sc_root}\n  silence_percentage: 0\n")
    assert main(["data", "check", str(spec)]) == 0
    assert "problems: 0" in capsys.readouterr().out
    assert main(["data", "check", f"folder:{root / 'missing'}"]) == 2
    assert "is not a directory" in capsys.readouterr().err


# --- plug-in datasets -------------------------------------------------------------------------


def test_an_installed_package_adds_a_dataset_through_an_entry_point(tmp_path, monkeypatch, sc_root):
    (tmp_path / "pld_toy_plugin.py").write_text(
        "from typing import Literal\n"
        "from distill.data.base import DatasetOptions, register_dataset\n"
        "from distill.data.speech_commands import SpeechCommandsOptions, build_speech_commands\n"
        "class ToyOptions(DatasetOptions):\n"
        "    name: Literal['toy_plugin'] = 'toy_plugin'\n"
        "@register_dataset('toy_plugin', ToyOptions)\n"
        "def build(opts):\n"
        "    return build_speech_commands(SpeechCommandsOptions(path=opts.path, silence_percentage=0))\n")
    info = tmp_path / "pld_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pld-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pld.datasets]\ntoy_plugin = pld_toy_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_loaded", False)
    options = parse_dataset_options({"name": "toy_plugin", "path": str(sc_root)})
    assert type(options).__name__ == "ToyOptions"
    assert len(build_source_index(options).clips) > 0
    assert "pld_toy_plugin" in sys.modules
