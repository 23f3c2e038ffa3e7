"""Speech Commands indexing, typed configs and the stage plan — no Ray needed."""

import subprocess
import sys

import pytest
import torch

from distill.checkpoint import ModelSpec, load_model_dir, save_model_dir
from distill.config import ConfigError, load_config
from distill.data.base import SILENCE, UNKNOWN, build_source_index, parse_dataset_options
from distill.stages import plan_chain


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


def test_config_defaults_overrides_and_errors(tmp_path):
    cfg = load_config(None)
    assert cfg.chain.lengths_ms == [1000, 900, 800, 700, 600, 500] and cfg.data.name == "speech_commands"
    cfg = load_config(None, {"train.epochs": 3, "chain.lengths_ms": [1000, 750, 500]})
    assert cfg.train.epochs == 3 and cfg.chain.lengths_ms == [1000, 750, 500]
    for overrides, field in [({"chain.lengths_ms": [500, 900]}, "chain.lengths_ms"),
                             ({"chain.crops_per_clip": 0}, "chain.crops_per_clip"),
                             ({"train.bogus": 1}, "train.bogus"), ({"data.name": "nope"}, "unknown dataset"),
                             ({"chain.lengths_ms": [1200, 500]}, "longer than data.clip_ms")]:
        with pytest.raises(ConfigError, match=field):
            load_config(None, overrides)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_plan_chain_links_each_student_to_the_previous_stage():
    plan = plan_chain(load_config(None, {"chain.lengths_ms": [1000, 750, 500], "train.teacher_epochs": 5}))
    # the first length is the teacher's: no student at the teacher's length unless asked for
    assert [s.name for s in plan] == ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]
    assert [s.teacher for s in plan] == [None, "teacher", "student_750ms", None, "teacher"]
    assert [s.kind for s in plan] == ["teacher", "student", "student", "baseline", "baseline"]
    assert [s.input_ms for s in plan] == [1000, 750, 500, 500, 500]
    assert [s.method for s in plan][-2:] == ["direct", "one_shot"] and plan[0].epochs == 5
    selfd = plan_chain(load_config(None, {"chain.lengths_ms": [1000, 500], "chain.self_distill": True}))
    assert [(s.name, s.teacher) for s in selfd][:3] == [("teacher", None), ("student_1000ms", "teacher"),
                                                        ("student_500ms", "student_1000ms")]
    default = plan_chain(load_config(None))
    assert [s.input_ms for s in default if s.kind != "baseline"] == [1000, 900, 800, 700, 600, 500]
    with pytest.raises(ConfigError, match="the first length is the teacher's"):
        load_config(None, {"chain.lengths_ms": [1000]})
    assert [s.name for s in plan_chain(load_config(None, {"chain.lengths_ms": [1000], "chain.self_distill": True,
                                                          "chain.baselines": []}))] == ["teacher", "student_1000ms"]


def test_a_stage_at_the_clip_length_has_one_row_per_clip():
    from distill.stages import crops_per_clip

    cfg = load_config(None, {"chain.crops_per_clip": 4})
    assert crops_per_clip(cfg, 1000) == 1 and crops_per_clip(cfg, 500) == 4
    sliding = load_config(None, {"chain.crop_placement": "sliding", "chain.crop_stride_ms": 100})
    assert crops_per_clip(sliding, 1000) == 1 and crops_per_clip(sliding, 500) == 6


def test_checkpoint_roundtrip_and_refuses_pickled_objects(tmp_path):
    spec = ModelSpec(model="tiny", options={}, labels=["a", "b", "c"], input_ms=500, features={"sample_rate": 16000})
    model = spec.build().eval()
    save_model_dir(tmp_path / "m", model, spec)
    loaded, spec2 = load_model_dir(tmp_path / "m")
    x = torch.randn(2, 8000)
    assert torch.allclose(loaded(x), model(x)) and spec2.labels == ["a", "b", "c"]
    torch.save({"evil": ModelSpec}, tmp_path / "m" / "model.pt")  # a pickled class, not tensors
    with pytest.raises(ValueError, match="refused to load"):
        load_model_dir(tmp_path / "m")


def test_method_core_imports_without_ray_or_mlflow():
    code = ("import sys; import distill.features, distill.augment, distill.models, distill.crops, distill.labels, distill.protocols, "
            "distill.config, distill.stages, distill.checkpoint, distill.data.speech_commands; "
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert cfg.chain.lengths_ms[0] <= cfg.data.clip_ms, path
