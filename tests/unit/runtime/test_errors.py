"""`errors.step` turns what a step's file operations raise into one line a user can act on."""

from __future__ import annotations

import errno

import pytest

from distill.runtime.infra.errors import StepError, step

S3_DOWN = ("When listing objects under key 'runs/x/model' in bucket 'b': AWS Error NETWORK_CONNECTION during "
           "ListObjectsV2 operation: curlCode: 7, Could not connect to server")


def fail(exc: BaseException):
    with step("student_500ms", "relabel", storage_root="s3://b/runs", chain_run_id="abc123"):
        raise exc


def test_an_unreachable_object_store_names_the_root_and_the_resume_command():
    with pytest.raises(StepError) as info:
        fail(OSError(S3_DOWN))
    message = str(info.value)
    assert message.startswith("stage student_500ms, relabel: the object store of storage.root s3://b/runs did not answer")
    assert "NETWORK_CONNECTION" in message and message.endswith("sealed datasets are reused)")
    assert "pld resume abc123" in message


def test_the_store_is_recognised_inside_an_error_ray_wrapped():
    wrapped = RuntimeError(f"Training failed.\nTraceback ...\nOSError: {S3_DOWN}\n")
    with pytest.raises(StepError, match="object store of storage.root s3://b/runs did not answer"):
        fail(wrapped)


def test_a_full_disk_and_a_missing_file_are_told_apart():
    with pytest.raises(StepError, match="no space left on device under storage.root s3://b/runs"):
        fail(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StepError, match=r"relabel: No such file or directory: /x/model.pt"):
        fail(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/model.pt"))


def test_other_errors_pass_through_unchanged():
    with pytest.raises(ZeroDivisionError):
        fail(ZeroDivisionError("not a file problem"))


def test_find_run_tells_a_missing_run_from_a_refusal(tmp_path):
    import mlflow
    import pytest
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from distill.runtime.infra.errors import find_run

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ValueError) as missing:
        find_run(client, "0" * 32)
    assert str(missing.value) == (f"run '{'0' * 32}' not found in the tracking store sqlite:///{tmp_path / 'mlflow.db'}; "
                                  "pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the store the chain used")

    class Refusing:
        tracking_uri = "http://127.0.0.1:1"

        def get_run(self, run_id):
            raise MlflowException("no", error_code=PERMISSION_DENIED)

    with pytest.raises(MlflowException) as refused:
        find_run(Refusing(), "0" * 32)
    assert refused.value.error_code == "PERMISSION_DENIED"
