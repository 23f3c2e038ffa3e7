"""Integrity, fingerprints, configs that fail early, `--dry-run` and security — no cluster needed."""

from __future__ import annotations

import json
import shutil

import pytest

from distill.cli import main
from distill.config import ConfigError, load_config
from distill.runtime.manifest import IntegrityError, config_fingerprint, is_sealed, seal, tree_sha256, verify


def make_dataset(root, rows=b"rows"):
    (root / "data" / "part").mkdir(parents=True)
    (root / "data" / "part" / "a.parquet").write_bytes(rows)
    (root / "data" / "b.parquet").write_bytes(b"more rows")
    return root


def test_a_sealed_dataset_verifies_until_a_byte_changes(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    assert not is_sealed(ds)
    with pytest.raises(IntegrityError, match="no sealed manifest.json"):
        verify(ds)
    sealed = seal(ds, {"rows": 2}, teacher_run_id="abc")
    assert is_sealed(ds) and verify(ds, {"teacher_run_id": "abc"})["rows"] == 2
    copy = shutil.copytree(ds, tmp_path / "elsewhere")
    assert tree_sha256(copy / "data") == sealed["content_sha256"]  # location-independent
    with pytest.raises(IntegrityError, match="teacher_run_id is 'abc', expected 'xyz'"):
        verify(ds, {"teacher_run_id": "xyz"})
    (ds / "data" / "part" / "a.parquet").write_bytes(b"rowz")
    with pytest.raises(IntegrityError, match="data files changed after the manifest was written"):
        verify(ds)
    (ds / "data" / "part" / "a.parquet").write_bytes(b"rows")
    (ds / "data" / "extra.parquet").write_bytes(b"")  # an added file is a change too
    with pytest.raises(IntegrityError, match="changed"):
        verify(ds)
    (ds / "manifest.json").write_text("{ half a manifest")
    assert not is_sealed(ds)


def test_fingerprint_ignores_where_a_chain_runs_but_not_what_it_computes():
    base = load_config(None).model_dump(mode="json")
    moved = load_config(None, {"tracking.uri": "http://127.0.0.1:5000", "ray.num_cpus": 8}).model_dump(mode="json")
    other = load_config(None, {"train.epochs": 3}).model_dump(mode="json")
    assert config_fingerprint(base) == config_fingerprint(moved) != config_fingerprint(other)


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
    }
    for text, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert message in str(info.value), (text, str(info.value))


def test_dry_run_prints_the_resolved_config_and_plan_and_starts_nothing(tmp_path, sc_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\nchain: {{lengths_ms: [1000, 750, 500], crops_per_clip: 3}}\n")
    assert main(["run", str(cfg), "--dry-run", "--set", "train.epochs=4"]) == 0
    out = capsys.readouterr().out
    assert "# resolved config (fingerprint " in out and "epochs: 4" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("student_", "direct_", "one_shot_", "teacher "))}
    assert list(lines) == ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]
    # 7 train speakers × (10 keywords + ceil(10 %) unknown + ceil(10 %) silence) clips × 3 crops; the teacher
    # trains on the clips themselves, one row each
    assert lines["student_750ms"][3:6] == ["750", "teacher", "4"] and lines["student_750ms"][-1] == str(84 * 3)
    assert lines["teacher"][-1] == str(84)
    assert not (tmp_path / "pld-runs").exists() and not (tmp_path / "mlflow.db").exists()
    # sliding crops: every 100 ms, a 750 ms crop has 4 positions in 1 s (0, 100, 200 and 250, flush with the end)
    assert main(["run", str(cfg), "--dry-run", "--set", "chain.crop_placement=sliding"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(("student_", "teacher "))}
    assert (rows["teacher"], rows["student_750ms"], rows["student_500ms"]) == (str(84), str(84 * 4), str(84 * 6))


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


def test_a_pickled_object_checkpoint_is_refused(tmp_path):
    import torch

    from distill.checkpoint import ModelSpec, load_model_dir, save_model_dir

    spec = ModelSpec(model="tiny", options={}, labels=["a", "b"], input_ms=500, features={})
    save_model_dir(tmp_path / "m", spec.build(), spec)

    class Payload:  # what an attacker's checkpoint would carry: code run on unpickling
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').close()",))

    torch.save({"weights": Payload()}, tmp_path / "m" / "model.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_model_dir(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()
    json.loads((tmp_path / "m" / "model.json").read_text())
