"""Storage roots: a local directory or an object store URI, through the same functions. The
object store is a real S3 API (moto's server) on 127.0.0.1; the chain test runs a whole chain
with `storage.root: s3://…` on a local Ray and checks that every output is in the bucket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from mlflow import MlflowClient

from distill.runtime import storage
from distill.runtime.manifest import IntegrityError, seal, tree_sha256, verify


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 and a bucket; the AWS environment pointed at it (pyarrow,
    Ray Data and Ray Train all read AWS_ENDPOINT_URL), restored afterwards."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="test",
                               secret_key="test", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("pld-test")
        yield {"bucket": "s3://pld-test", "env": env}
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


@pytest.mark.integration
def test_a_chain_with_an_s3_storage_root_keeps_every_output_in_the_bucket(tmp_path, s3):
    from distill.data.synth import synthesize_corpus

    corpus = tmp_path / "corpus"
    synthesize_corpus(corpus, seed=3, speakers=8, unknown_words=("bed", "cat"), workers=2, progress=False)
    root = storage.join(s3["bucket"], "runs")
    cfg = tmp_path / "s3.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "s3chain", "data": {"name": "speech_commands", "path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": ["direct"]},
        "train": {"epochs": 1, "batch_size": 32}, "storage": {"root": root}, "ray": {"num_cpus": 2}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **s3["env"], "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(uri)
    parent = next(r for r in client.search_runs([client.get_experiment_by_name("pld").experiment_id])
                  if r.data.tags.get("pld.kind") == "chain")
    run_dir = parent.data.tags["pld.run_dir"]
    assert run_dir == storage.join(root, f"s3chain-{parent.info.run_id}")
    files = storage.list_files(run_dir)
    for stage in ("teacher", "student_500ms", "direct_500ms"):
        assert f"stages/{stage}/manifest.json" in files and f"stages/{stage}/stage.json" in files, stage
        assert f"stages/{stage}/model/model.pt" in files, stage
        assert any(f.startswith(f"stages/{stage}/data/") and f.endswith(".parquet") for f in files), stage
        assert any(f.startswith(f"stages/{stage}/train/") and "checkpoint_" in f for f in files), stage  # Ray Train
        verify(storage.join(run_dir, "stages", stage))  # sealed, and the bucket holds what the seal says
    assert {"source/manifest.json", "source/quarantine.csv", "config.json", "driver.json"} <= set(files)
    assert any(f.startswith("source/data/split=train/") for f in files)
    assert not (tmp_path / "pld-runs").exists()  # nothing went to the driver's disk
    # a second `pld run` of the same config finds the finished chain complete and starts a new one;
    # `pld resume` reads its records from the bucket and reuses every stage
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "resume", parent.info.run_id], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("finished earlier") == 3
