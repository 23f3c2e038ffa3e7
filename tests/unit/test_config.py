"""Typed configs: defaults, overrides, errors that name the field, nothing evaluated, every shipped config."""

from __future__ import annotations

import pytest

from distill.cli import main
from distill.config import ConfigError, load_config

from conftest import REPO


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


def test_method_options_have_laptop_defaults_and_reject_nonsense():
    cfg = load_config(None)
    assert (cfg.chain.crop_placement, cfg.chain.teacher_view, cfg.labels.original_weight, cfg.labels.min_confidence) == (
        "random", "native", 0.0, 0.0)
    params = load_config(None, {"chain.teacher_view": "pad", "labels.min_confidence": 0.5}).flat_params()
    assert params["chain.teacher_view"] == "pad" and params["labels.min_confidence"] == "0.5"  # MLflow params
    for overrides, field in [({"chain.crop_placement": "grid"}, "chain.crop_placement"),
                             ({"chain.pad_position": "left"}, "chain.pad_position"),
                             ({"labels.original_weight": 1.5}, "labels.original_weight"),
                             ({"labels.min_confidence": 1.0}, "labels.min_confidence")]:
        with pytest.raises(ConfigError, match=field):
            load_config(None, overrides)


def test_impossible_configs_name_the_field_and_the_allowed_values(tmp_path):
    cases = {
        "chain: {lengths_ms: [500, 900]}": "strictly decreasing",
        "chain: {lengths_ms: [1000, 0]}": "lengths must be positive",
        "chain: {lengths_ms: [1200, 600]}": "longer than data.clip_ms",
        "chain: {crops_per_clip: 0}": "chain.crops_per_clip: Input should be greater than or equal to 1",
        "labels: {mode: fuzzy}": "labels.mode: Input should be 'hard' or 'soft'",
        "train: {epocs: 3}": "train.epocs: Extra inputs are not permitted (allowed: epochs, teacher_epochs",
        "trian: {epochs: 3}": "trian: Extra inputs are not permitted (allowed: name, seed, data",
        "data: {name: folder, path: x, colour: red}": "data.colour: Extra inputs are not permitted (allowed: name, path",
        "train: {num_workers: two}": "train.num_workers: Input should be a valid integer",
        "data: {name: nope}": "unknown dataset 'nope'",
        "train: {precision: fp16}": "train.precision: fp16 needs train.use_gpu: true",
        "relabel: {precision: fp8}": "relabel.precision: Input should be 'fp32', 'bf16' or 'fp16'",
        "train: {runner: local, num_workers: 2}": "train: train.runner: local trains in the driver's one",
        "train: {runner: local, use_gpu: true}": "set runner: actor for several workers on the driver's node, or",
        "train: {runner: actor, use_gpu: true}": "train.runner: actor trains on the driver's node's CPUs; set runner",
        "train: {runner: ray}": "train.runner: Input should be 'auto', 'local', 'actor' or 'workers'",
        "teacher_model: {name: speech_embedding}\ntrain: {augment: {spec_time_masks: 2}}":
            "stage teacher: model speech_embedding takes the waveform",
        "model: {name: speech_embedding}\ntrain: {augment: {warp_prob: 0.5}}":
            "set train.augment.spec_time_masks and spec_freq_masks to 0",
        "teacher_model: {name: ensemble, options: {members: [{name: res8}, {name: res9}]}}":
            "teacher_model.options: ensemble: members[1]: unknown model 'res9'",
        "model: {name: ensemble, options: {members: [{name: tiny}]}}":
            "model.options: ensemble: members must be a list of at least two networks",
        "teacher_model: {name: ensemble, options: {member: []}}": "teacher_model.options: ensemble: unknown options ['member']",
        "teacher_model: {name: ensemble, options: {combine: median}}":
            "teacher_model.options: ensemble: combine must be one of mean, product, got 'median'",
        "teacher_model: {name: ensemble, options: {unknown_offset: minus one}}":
            "teacher_model.options: ensemble: unknown_offset must be a finite number",
        "teacher_model: {name: ensemble, options: {speeds: 1.1}}":
            "teacher_model.options: ensemble: speeds must be a list of positive playback speeds",
        "teacher_model: {name: ensemble}\ntrain: {augment: {spec_freq_masks: 2}}": "model ensemble takes the waveform",
        "train: {validate_every: 3}": "train.validate_every: 3 leaves epochs unscored, and keep: best",
        "train: {validate_every: 0}": "train.validate_every: Input should be greater than or equal to 1",
        "stages: {teacher: {train: {validate_every: 5}}}": "stages: teacher would keep its best-scored epoch with "
                                                           "validate_every: 5",
        "train: {keep: average, validate_every: 5}\nstages: {students: {train: {keep: best}}}":
            "stages: student_900ms would keep its best-scored epoch",
    }
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert message in str(info.value), (text, str(info.value))
    path.write_text("stages: {teacher: {train: {keep: average, validate_every: 10}}}\n")  # the teacher's alone: taken
    assert load_config(path).stages["teacher"].train.validate_every == 10
    path.write_text("teacher_model: {name: speech_embedding}\ntrain: {augment: {gain_prob: 0.5}}\n")  # the waveform's own: taken
    assert load_config(path).teacher_model.name == "speech_embedding"
    path.write_text("teacher_model: {name: ensemble, options: {members: [{name: res8, weight: 0.3}, "
                    "{name: speech_embedding, weight: 0.7, lr_scale: 0.1}]}}\n")
    assert load_config(path).teacher_model.options["members"][1]["lr_scale"] == 0.1


def test_configs_never_evaluate_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["run", str(cfg), "--dry-run"]) == 2
    assert "not valid YAML" in capsys.readouterr().err and not marker.exists()
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: x\n")
    assert main(["run", str(ok), "--dry-run", "--set", f"name=!!python/object/apply:os.system ['touch {marker}']"]) == 2
    assert "--set name: not a plain YAML value" in capsys.readouterr().err and not marker.exists()


def test_an_ensemble_config_records_its_combining_rule():
    from distill.core.ensemble import CONFIG_COMBINE
    resolved = load_config(None, {"teacher_model.name": "ensemble"})
    assert resolved.teacher_model.options == {"combine": CONFIG_COMBINE, "unknown_offset": 0.0, "speeds": [1.0]}
    assert CONFIG_COMBINE == "mean"
    chosen = load_config(None, {"teacher_model.name": "ensemble",
                                "teacher_model.options": {"combine": "product", "unknown_offset": -1.0,
                                                          "speeds": [0.9, 1.0, 1.1]}})
    assert chosen.teacher_model.options == {"combine": "product", "unknown_offset": -1.0, "speeds": [0.9, 1.0, 1.1]}
    assert load_config(None, {"model.name": "res8"}).model.options == {}  # other networks: their options as written


def test_every_shipped_config_validates():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert cfg.chain.lengths_ms[0] <= cfg.data.clip_ms, path


def test_an_error_in_a_set_value_names_the_set_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3}\nlabels: {mode: fuzzy}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"train.epochs": "abc", "trian.lr": 0.1}, overrides_flag="--set")
    lines = str(info.value).splitlines()[1:]
    assert "  --set train.epochs: Input should be a valid integer, unable to parse string as an integer" in lines
    assert any(line.startswith("  --set trian.lr (trian): Extra inputs are not permitted") for line in lines)
    assert "  labels.mode: Input should be 'hard' or 'soft'" in lines  # the file's own error keeps its field
