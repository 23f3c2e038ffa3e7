"""benchmarks/ensemble_weight.py: mixing the members' posteriors at a weight answers as the
ensemble built with that weight does; w = 0 and 1 are the members alone; a model that is not an
ensemble, or a part with labels the model lacks, is one clear error."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.core.checkpoint import ModelSpec, save_model_dir
from distill.core.models import build_model
from distill.core.protocols import predict
from distill.names import SILENCE, UNKNOWN

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # it reads its parts with speech_embedding.py's helpers
spec = importlib.util.spec_from_file_location("ensemble_weight", BENCHMARKS / "ensemble_weight.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

LABELS = [SILENCE, UNKNOWN, "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def part(root: Path) -> str:
    import soundfile as sf
    for label in LABELS:
        (root / label).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        label = LABELS[2 + i % 2]
        sf.write(root / label / f"s{i}_nohash_0.wav", (rng.standard_normal(16000) * 3000 * (1 + i % 2)).astype(np.int16),
                 16000, subtype="PCM_16")
    return f"speech_commands_test:{root}"


def ensemble_dir(path: Path, weights: tuple[float, float], model: str = "ensemble", labels: list[str] = LABELS,
                 combine: str = "mean", unknown_offset: float = 0.0, speeds: tuple[float, ...] = (1.0,)) -> Path:
    torch.manual_seed(0)
    options = {"members": [{"name": "tiny", "weight": weights[0]}, {"name": "tiny", "weight": weights[1]}],
               "combine": combine, "unknown_offset": unknown_offset, "speeds": list(speeds)}
    options = options if model == "ensemble" else {}
    net = build_model(model, len(labels), options, labels=labels).eval()
    return save_model_dir(path, net, ModelSpec(model, options, labels, 1000, net.features.cfg.model_dump()))


@pytest.mark.parametrize("combine", ["mean", "product"])
def test_a_weight_answers_as_the_ensemble_built_with_it(tmp_path, combine):
    spec_ = part(tmp_path / "part")
    posts, truth, silence = bench.member_posteriors(*bench.load_ensemble(str(ensemble_dir(tmp_path / "m", (0.5, 0.5)))), spec_,
                                                    "test")
    assert len(posts) == 2 and posts[0].shape == (12, 1, len(LABELS)) and silence == 0
    waves = bench.waveforms(bench.clips(spec_, "test")[0])
    decisions = {}
    for w in (0.0, 0.3, 1.0):
        from distill.core.checkpoint import load_model_dir
        model, mspec = load_model_dir(ensemble_dir(tmp_path / f"m{w}", (1 - w, w), combine=combine) if 0 < w < 1
                                      else tmp_path / "m")
        reference = model if 0 < w < 1 else model.net.members[int(w)]
        expected = predict(reference.eval(), waves, mspec.input_samples, "stream", silence_index=silence)
        decisions[w] = bench.mixed_decisions(posts, bench.member_weights(w, 2), silence, combine)
        np.testing.assert_array_equal(decisions[w], expected)
        assert bench.mixed_accuracy(posts, bench.member_weights(w, 2), truth, silence, combine) == \
            round(float((expected == truth).mean()), 4)
    assert not np.array_equal(decisions[0.0], decisions[1.0])  # members that differ: the weight matters
    with pytest.raises(ValueError, match="has 3"):
        bench.member_weights(0.5, 3)


@pytest.mark.parametrize("combine", ["mean", "product"])
def test_an_unknown_offset_answers_as_the_ensemble_built_with_it(tmp_path, combine):
    from distill.core.checkpoint import load_model_dir
    spec_ = part(tmp_path / "part")
    posts, truth, silence = bench.member_posteriors(*bench.load_ensemble(str(ensemble_dir(tmp_path / "m", (0.5, 0.5)))),
                                                    spec_, "test")
    waves = bench.waveforms(bench.clips(spec_, "test")[0])
    unknown = LABELS.index(UNKNOWN)
    for offset in (0.0, -1.0, 3.0):
        model, mspec = load_model_dir(ensemble_dir(tmp_path / f"m{offset}", (0.5, 0.5), combine=combine,
                                                   unknown_offset=offset))
        expected = predict(model.eval(), waves, mspec.input_samples, "stream", silence_index=silence)
        np.testing.assert_array_equal(
            bench.mixed_decisions(posts, [0.5, 0.5], silence, combine, unknown, offset), expected)
    assert (bench.mixed_decisions(posts, [0.5, 0.5], silence, combine, unknown, 30.0) == unknown).all()


@pytest.mark.parametrize("combine", ["mean", "product"])
def test_a_speed_set_answers_as_the_ensemble_built_with_it(tmp_path, combine):
    from distill.core.checkpoint import load_model_dir
    spec_ = part(tmp_path / "part")
    loaded = bench.load_ensemble(str(ensemble_dir(tmp_path / "m", (0.5, 0.5))))
    by_speed = {v: bench.member_posteriors(*loaded, spec_, "test", v)[0] for v in (0.8, 1.0, 1.25)}
    _, truth, silence = bench.member_posteriors(*loaded, spec_, "test")
    waves = bench.waveforms(bench.clips(spec_, "test")[0])
    for group in ([1.0], [0.8, 1.0, 1.25], [0.8]):
        model, mspec = load_model_dir(ensemble_dir(tmp_path / f"m{group}", (0.5, 0.5), combine=combine, speeds=group))
        expected = predict(model.eval(), waves, mspec.input_samples, "stream", silence_index=silence)
        posts = bench.viewed(by_speed, group)
        np.testing.assert_array_equal(bench.mixed_decisions(posts, [0.5, 0.5], silence, combine), expected)
        assert torch.allclose(bench.mixed_posteriors(posts, [0.5, 0.5], combine),
                              torch.softmax(model(torch.from_numpy(waves)), -1)[:, None], atol=1e-5)
    assert not torch.allclose(bench.viewed(by_speed, [0.8, 1.0, 1.25])[0], by_speed[1.0][0], atol=1e-4)  # they matter
    assert bench.speed_set("0.9,1,1.1") == [0.9, 1.0, 1.1]
    for bad in ("fast", "0,1"):
        with pytest.raises(__import__("argparse").ArgumentTypeError, match=repr(bad)):
            bench.speed_set(bad)


def test_the_choice_is_the_best_unseen_engine_row_within_the_validation_drop():
    rows = [{"validation": v, "unseen_engine_validation": u} for v, u in ((0.98, 0.85), (0.97, 0.88), (0.978, 0.87),
                                                                           (0.98, 0.85))]
    assert bench.choose(rows) is rows[1]
    assert bench.choose(rows, 0.005) is rows[2]
    assert bench.choose(rows, 0.0) is rows[0]  # a tie on the part that chooses: the first best on validation


def test_a_model_that_is_not_an_ensemble_and_labels_it_lacks_are_refused(tmp_path):
    spec_ = part(tmp_path / "part")
    with pytest.raises(ValueError, match="model 'tiny', not an ensemble"):
        bench.load_ensemble(str(ensemble_dir(tmp_path / "t", (1, 1), model="tiny")))
    with pytest.raises(ValueError, match=r"labels \['no'\] are not among"):
        bench.member_posteriors(*bench.load_ensemble(str(ensemble_dir(tmp_path / "m", (1, 1),
                                                                       labels=[x for x in LABELS if x != "no"]))),
                                spec_, "test")


def test_pooled_records_choose_on_each_settings_mean(tmp_path, capsys):
    def record(*scores):  # (unseen-engine validation, validation) for offsets 0 and -1
        return {"rows": [{"combine": "product", "w": 0.5, "unknown_offset": o, "validation": v,
                          "unseen_engine_validation": u} for o, (u, v) in zip((0.0, -1.0), scores)]}
    records = [record((0.85, 0.98), (0.88, 0.97)), record((0.86, 0.98), (0.84, 0.98))]
    rows = bench.pool_rows(records)
    assert rows[1] == {"combine": "product", "w": 0.5, "unknown_offset": -1.0, "speeds": [1.0], "validation": 0.975,
                       "unseen_engine_validation": 0.86}  # a record from before speeds: the input as it is
    assert bench.choose(rows) is rows[1] and bench.choose(rows, 0.002) is rows[0]
    paths = []
    for i, r in enumerate(records):
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(__import__("json").dumps(r))
    sys.argv = ["ensemble_weight.py", "--pool", *map(str, paths), "--json", str(tmp_path / "pooled.json")]
    bench.main()
    assert "| product | 0.5 (chosen) | -1 | 1 | 0.975 | 0.860 |" in capsys.readouterr().out
    assert __import__("json").loads((tmp_path / "pooled.json").read_text())["chosen_unknown_offset"] == -1.0
    records[1]["rows"].pop()
    with pytest.raises(ValueError, match="record 2 scores other settings than record 1"):
        bench.pool_rows(records)


def test_a_record_written_before_the_options_pools_as_the_mean_without_an_offset():
    old = {"rows": [{"w": 0.5, "validation": 0.98, "unseen_engine_validation": 0.84}]}
    new = {"rows": [{"combine": "mean", "w": 0.5, "unknown_offset": 0.0, "validation": 0.96,
                     "unseen_engine_validation": 0.86}]}
    assert bench.pool_rows([old, new]) == [{"combine": "mean", "w": 0.5, "unknown_offset": 0.0, "speeds": [1.0],
                                            "validation": 0.97, "unseen_engine_validation": 0.85}]
