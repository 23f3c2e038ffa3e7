"""Sealed datasets and config fingerprints."""

from __future__ import annotations

import shutil

import pytest

from distill.config import load_config
from distill.runtime.infra.manifest import config_fingerprint, IntegrityError, is_sealed, seal, tree_sha256, verify


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
