"""Storage roots: a local directory or an object-store URI (a real S3 API, moto's server on 127.0.0.1) through the same functions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from distill.runtime.infra import storage
from distill.runtime.infra.manifest import IntegrityError, seal, tree_sha256, verify


def _write_tree(root: str) -> None:
    storage.write_text(storage.join(root, "data", "split=train", "a.parquet"), "alpha")
    storage.write_text(storage.join(root, "data", "split=test", "b.parquet"), "beta")
    storage.write_text(storage.join(root, "data", "c.txt"), "gamma")


def test_local_and_s3_locations_behave_the_same(tmp_path, s3):
    local, remote = str(tmp_path / "ds"), storage.join(s3["bucket"], "unit", "ds")
    for root in (local, remote):
        _write_tree(root)
        assert storage.list_files(storage.join(root, "data")) == ["c.txt", "split=test/b.parquet", "split=train/a.parquet"]
        assert storage.list_dirs(storage.join(root, "data")) == ["split=test", "split=train"]
        assert storage.read_text(storage.join(root, "data", "c.txt")) == "gamma"
        assert storage.is_dir(storage.join(root, "data")) and storage.is_file(storage.join(root, "data", "c.txt"))
        assert not storage.exists(storage.join(root, "nothing"))
    # the content hash does not depend on where the files are
    assert tree_sha256(storage.join(local, "data")) == tree_sha256(storage.join(remote, "data"))
    sealed = seal(remote, {"rows": 2})
    assert verify(remote)["content_sha256"] == sealed["content_sha256"]
    storage.write_text(storage.join(remote, "data", "c.txt"), "changed")
    with pytest.raises(IntegrityError, match="changed after the manifest"):
        verify(remote)
    storage.remove_tree(storage.join(remote, "data"))
    assert not storage.exists(storage.join(remote, "data")) and storage.list_files(storage.join(remote, "data")) == []


def test_model_directories_upload_and_come_back_as_local_copies(tmp_path, s3):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"weights")
    (src / "sub" / "x.json").write_text("{}")
    (src / "train_state.pt").write_bytes(b"optimizer")
    remote = storage.join(s3["bucket"], "unit", "model")
    storage.upload_dir(src, remote, ignore=("train_state.pt",))
    assert storage.list_files(remote) == ["model.pt", "sub/x.json"]
    copy = storage.local_copy(remote)
    assert Path(copy, "model.pt").read_bytes() == b"weights" and storage.local_copy(remote) == copy  # cached
    time.sleep(1.1)  # object stores keep second-resolution times
    (src / "model.pt").write_bytes(b"new weights")
    storage.upload_dir(src, remote)
    assert Path(storage.local_copy(remote), "model.pt").read_bytes() == b"new weights"  # a new version is fetched
    assert storage.local_copy(str(src)) == str(src)  # local directories are used in place


def test_an_unwritable_storage_root_fails_before_any_work(tmp_path, s3):
    with pytest.raises(ValueError, match="storage.root s3://no-such-bucket-pld/x: cannot write there"):
        storage.check_writable("s3://no-such-bucket-pld/x")
    with pytest.raises(ValueError, match="cannot write there"):
        storage.check_writable("nosuchscheme://x/y")
    storage.check_writable(str(tmp_path / "fine"))
    storage.check_writable(storage.join(s3["bucket"], "fine"))


def test_chains_starting_at_once_on_one_root_all_find_it_writable(tmp_path):
    """A sweep starts chains together on one storage root: no chain's check may take another's probe file."""
    from concurrent.futures import ThreadPoolExecutor

    def check(_: int) -> None:
        for _ in range(40):
            storage.check_writable(str(tmp_path))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(8)))  # raises what a check raised
    assert not list(tmp_path.iterdir())  # every probe removed


def test_a_storage_root_is_resolved_once_and_joins_local_paths_and_uris_alike(tmp_path, monkeypatch, s3):
    from distill.config import ExperimentConfig
    from distill.runtime.analysis.sweep import sweeps_location

    monkeypatch.chdir(tmp_path)
    local = storage.StorageRoot.of("runs/")
    assert local.location == str(tmp_path / "runs") and not local.is_uri  # absolute, from the directory it was named in
    assert local.join("shared-stages", "k.json") == str(tmp_path / "runs" / "shared-stages" / "k.json")
    remote = storage.StorageRoot.of(storage.join(s3["bucket"], "runs") + "/")
    assert remote.is_uri and str(remote) == storage.join(s3["bucket"], "runs")  # no trailing slash, no local path
    remote.check_writable()
    # a sweep keeps its trials under the root, a URI as a URI (Path.resolve once made it a local directory)
    cfg = ExperimentConfig.model_validate({"name": "x", "data": {"name": "speech_commands", "path": "d"},
                                           "storage": {"root": "s3://bucket/pld"}})
    assert sweeps_location(cfg) == "s3://bucket/pld/sweeps"
