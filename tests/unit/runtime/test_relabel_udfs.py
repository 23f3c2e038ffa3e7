"""The relabel step's batch functions without Ray: the teacher's view of a crop, the confidence filter, the label statistics of a written dataset."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distill.core.labels import keep_confident, LabelSpec
from distill.runtime.execution.relabel import _apply_teacher, dataset_label_stats, LabelJob


class _Recorder(torch.nn.Module):
    """A fake teacher: records the input length it was shown; class = 1 when the crop's mean is positive."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[1])
        m = x.float().mean(dim=1)
        return torch.stack([-m, m, torch.zeros_like(m)], dim=1) * 10


def _crops(values: list[float], samples: int = 8000) -> dict[str, np.ndarray]:
    n = len(values)
    return {"clip_id": np.array([f"c{i}" for i in range(n)], dtype=object), "crop_index": np.zeros(n, np.int32),
            "waveform": np.stack([np.full(samples, v, np.float32) for v in values])}


def test_the_teacher_sees_native_crops_or_crops_padded_to_its_length():
    labels = np.array(["no", "yes", "up"], dtype=object)
    model = _Recorder()
    _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", 16000, LabelJob("r"))
    _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", 16000, LabelJob("r", labels=LabelSpec("pad")))
    out = _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", 16000,
                         LabelJob("r", labels=LabelSpec("pad", "random"), seed=3))
    assert model.seen == [8000, 16000, 16000]
    assert out["waveform"].shape == (2, 8000)  # the dataset keeps the crop; only the teacher's view is padded
    assert out["teacher_label"].tolist() == ["yes", "no"]


def test_confidence_filter_drops_unsure_crops():
    labels = np.array(["no", "yes", "up"], dtype=object)
    # mean 0.5 → logits (-5, 5, 0): confident; mean 0.01 → (-0.1, 0.1, 0): unsure
    out = _apply_teacher(_crops([0.5, 0.01, -0.5]), _Recorder(), labels, "cpu", 8000,
                         LabelJob("r", labels=LabelSpec(min_confidence=0.6)))
    assert out["clip_id"].tolist() == ["c0", "c2"] and out["teacher_label"].tolist() == ["yes", "no"]
    assert all(len(v) == 2 for v in out.values())
    assert keep_confident(np.array([0.2, 0.6, 0.9]), 0.6).tolist() == [False, True, True]
    with pytest.raises(ValueError):
        keep_confident(np.array([0.5]), 1.0)


def test_label_stats_count_agreement_and_relabelling_to_silence_and_unknown(tmp_path):
    labels = ["_silence_", "_unknown_", "yes", "no"]
    source = [2, 2, 2, 2, 3, 3, 0, 1]
    teacher = [2, 2, 0, 1, 3, 0, 0, 2]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"source_label_index": source, "teacher_label_index": teacher}), tmp_path / "data" / "p.parquet")
    stats = dataset_label_stats(tmp_path / "data", labels)
    assert stats["agreement"] == pytest.approx(4 / 8)
    assert stats["to_silence"] == pytest.approx(2 / 7)  # of the 7 crops whose clip is not silence
    assert stats["to_unknown"] == pytest.approx(1 / 7)
    assert set(dataset_label_stats(tmp_path / "data", ["a", "b", "c", "d"])) == {"agreement"}


def test_referenced_crops_are_the_source_samples_in_the_rows_order():
    """Rows reference crops (clip, offset); cutting them from a batch of source clips gives each
    row's samples, rows of one clip in their written order, clips in the batch's order, and no
    row for a clip no row references (every crop of it dropped)."""
    from distill.runtime.execution.relabel import cut_referenced_crops

    waves = np.arange(3 * 20, dtype=np.int16).reshape(3, 20)  # clip c{i}: samples 20·i … 20·i + 19
    clip_ids = np.array(["c2", "c0", "c2", "c0", "c2"], dtype=object)  # written order, clips interleaved
    refs = {"offset": np.array([1, 4, 7, 0, 3]), "teacher_label_index": np.arange(5),
            "teacher_probs": np.eye(5, dtype=np.float32)}
    order = np.argsort(clip_ids.astype(str), kind="stable")
    spans = {"c0": (0, 2), "c2": (2, 5)}
    batch = {"clip_id": np.array(["c0", "c1", "c2"], dtype=object), "waveform": waves}
    out = cut_referenced_crops(batch, refs, spans, order, crop_samples=5)
    assert out["teacher_label_index"].tolist() == [1, 3, 0, 2, 4]
    for row, got in zip(out["teacher_label_index"], out["waveform"]):
        clip = int(clip_ids[row][1])
        assert got.tolist() == waves[clip, refs["offset"][row]:refs["offset"][row] + 5].tolist()
    assert (out["teacher_probs"] == np.eye(5, dtype=np.float32)[[1, 3, 0, 2, 4]]).all()
    empty = cut_referenced_crops({"clip_id": np.array(["c1"], dtype=object), "waveform": waves[1:2]}, refs, spans,
                                 order, crop_samples=5)
    assert empty["waveform"].shape == (0, 5) and len(empty["teacher_label_index"]) == 0


def test_a_chain_checks_each_stages_source_by_hash_and_hashes_the_source_once(tmp_path, monkeypatch):
    """read_training_crops' check: with the chain's verified source hash, a stage made from that
    source is read without hashing the source again, one made from another source is refused;
    without it (a caller outside a chain) the source is hashed and compared."""
    from distill.runtime.execution import relabel
    from distill.runtime.infra.manifest import IntegrityError

    hashed = []
    monkeypatch.setattr(relabel, "verify", lambda source, expect: hashed.append((source, expect)))
    made = {"format": relabel.FORMAT, "source_sha256": "a" * 64}
    relabel.check_crop_references(made, tmp_path / "stage", tmp_path / "source", "a" * 64)
    assert hashed == []
    with pytest.raises(IntegrityError, match="made from the source aaaaaaaaaaaa…, but the chain's source"):
        relabel.check_crop_references(made, tmp_path / "stage", tmp_path / "source", "b" * 64)
    relabel.check_crop_references(made, tmp_path / "stage", tmp_path / "source", None)
    assert hashed == [(tmp_path / "source", {"content_sha256": "a" * 64})]
    with pytest.raises(IntegrityError, match="format 'distilled/1'"):
        relabel.check_crop_references({**made, "format": "distilled/1"}, tmp_path / "stage", tmp_path / "source",
                                      "a" * 64)
