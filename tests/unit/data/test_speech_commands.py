"""Speech Commands indexing: splits by list file and speaker, seeded unknown and silence, clear errors."""

from __future__ import annotations

import pytest

from distill.data.base import build_source_index, parse_dataset_options, SILENCE, UNKNOWN


def index_for(root, **kw):
    return build_source_index(parse_dataset_options({"name": "speech_commands", "path": str(root), **kw}))


def test_splits_follow_the_list_files_and_keep_speakers(sc_root):
    idx = index_for(sc_root, unknown_percentage=100, silence_percentage=0)
    words = idx.clips[idx.clips.label != SILENCE]
    by_split = words.groupby("split")["speaker"].agg(set)
    assert by_split["validation"] == {"00000000"}
    assert by_split["test"] == {"00000001", "00000002"}
    assert not by_split["train"] & (by_split["validation"] | by_split["test"])
    assert idx.labels[:2] == [SILENCE, UNKNOWN] and idx.labels[2:] == ["yes", "no", "up", "down", "left", "right",
                                                                       "on", "off", "stop", "go"]
    assert set(words[words.clip_id.str.startswith("cat/")].label) == {UNKNOWN}


def test_unknown_and_silence_are_seeded_percentages_of_the_split(sc_root):
    idx = index_for(sc_root, unknown_percentage=10, silence_percentage=20, seed=3)
    train = idx.clips[idx.clips.split == "train"]
    keywords = (~train.label.isin([SILENCE, UNKNOWN])).sum()
    assert keywords == 70  # 7 train speakers × 10 keywords
    assert (train.label == UNKNOWN).sum() == 7  # ceil(10 % of 70)
    assert (train.label == SILENCE).sum() == 14  # ceil(20 % of 70)
    silence = train[train.label == SILENCE]
    assert silence.path.str.contains("_background_noise_").all() and silence.start.nunique() > 1
    again = index_for(sc_root, unknown_percentage=10, silence_percentage=20, seed=3)
    assert again.clips.equals(idx.clips)
    other = index_for(sc_root, unknown_percentage=10, silence_percentage=20, seed=4)
    assert not other.clips.equals(idx.clips)


def test_dataset_errors_name_the_path_and_the_fix(tmp_path, sc_root):
    with pytest.raises(FileNotFoundError, match="pld data synth"):
        index_for(tmp_path / "missing")
    (sc_root / "testing_list.txt").write_text("yes/ghost_nohash_0.wav\n")
    with pytest.raises(FileNotFoundError, match="ghost_nohash_0.wav"):
        index_for(sc_root)
    with pytest.raises(ValueError, match=r"data.keywords: folder\(s\) \[.marvin.\] missing"):
        index_for(tmp_path / "sc", keywords=["yes", "marvin"])


def test_a_relative_data_path_inside_a_ray_job_says_why_and_what_to_do(tmp_path, monkeypatch):
    from distill.data.base import ray_job_path_hint

    job_dir = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        index_for("data/synth-sc")
    assert "relative and pld runs inside a Ray job" in str(err.value) and "every node can read" in str(err.value)
    assert ray_job_path_hint("/abs/path", str(job_dir)) == ""
    assert ray_job_path_hint("data/x", str(tmp_path)) == ""  # not a job: the plain error stays
