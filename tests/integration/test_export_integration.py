"""A trained chain put to work: `pld export` (ONNX equal to the checkpoint under onnxruntime,
or refused), `--register` against a real `mlflow server` on 127.0.0.1, a real
`mlflow models serve` process answering a scoring request, and `pld predict` finding keywords
at known places in a long file. The corpus is one of noise bands (conftest.write_band_layout)
that res8_narrow learns in a minute, so the predictions the tests count on are correct ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from mlflow import MlflowClient

from conftest import MlflowServer, _free_port, wait_http, write_band_layout

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
RATE = 16000


def pld(*args: str, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    speakers = [f"{i:08x}" for i in range(20)]
    corpus = write_band_layout(root / "corpus", KEYWORDS + ["bed", "cat"], speakers, val=set(speakers[:3]),
                               test=set(speakers[3:6]))
    (root / "c.yaml").write_text(yaml.safe_dump({
        "name": "kws", "data": {"path": str(corpus)}, "model": {"name": "res8_narrow"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 2, "baselines": []},
        "train": {"epochs": 10, "teacher_epochs": 30, "batch_size": 32}, "ray": {"num_cpus": 2},
        "storage": {"root": str(root / "runs")}}))
    server = MlflowServer(root)
    server.start()
    # `mlflow models serve` starts `uvicorn` by name: the venv's bin must be on PATH, as in an activated venv
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        proc = pld("run", "c.yaml", cwd=root, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        chain_id = proc.stdout.split("chain run id: ")[1].split()[0]
        proc = pld("export", chain_id, "--out", "exported", "--register", "kws-500", "--int8", cwd=root, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield dict(root=root, env=env, server=server, chain_id=chain_id, out=root / "exported", stdout=proc.stdout,
                   card=json.loads((root / "exported" / "card.json").read_text()))
    finally:
        server.stop()


def test_export_writes_an_onnx_model_equal_to_its_checkpoint_with_its_card(trained):
    out, card = trained["out"], trained["card"]
    int8 = card["int8_check"]["kept"]  # written only when it measured ≥ 1.3x faster than fp32 here
    assert {p.name for p in out.iterdir()} == {"model.onnx", "labels.json", "model.md", "card.json"} | (
        {"model.int8.onnx"} if int8 else set())
    assert card["stage"] == "student_500ms" and card["input_ms"] == 500 and card["input_samples"] == 8000  # final student
    assert json.loads((out / "labels.json").read_text()) == card["labels"] and len(card["labels"]) == 12
    eq = card["equivalence"]
    assert eq["clips"] >= 200 and eq["max_abs_diff"] <= 1e-4 and eq["argmax_disagreements"] == 0
    client = MlflowClient(trained["server"].uri)
    stage_run = client.get_run(card["stage_run_id"])
    teacher_run = client.get_run(card["teacher_run_id"])
    assert stage_run.info.run_name == "student_500ms" and teacher_run.info.run_name == "teacher"
    assert card["chain_run_id"] == trained["chain_id"]
    for protocol in ("window", "stream", "center"):  # onnxruntime reproduces the stage's own test accuracy
        assert card["onnx"]["fp32"]["test_acc"][protocol] == pytest.approx(stage_run.data.metrics[f"test_acc_{protocol}"])
        if int8:
            assert 0 <= card["onnx"]["int8"]["test_acc"][protocol] <= 1
    manifest = json.loads((Path(client.get_run(trained["chain_id"]).data.tags["pld.run_dir"]) / "stages" /
                           "student_500ms" / "manifest.json").read_text())
    assert card["dataset_sha256"] == manifest["content_sha256"]
    assert card["macs"] > 0 and 0 < card["threshold"] < 1
    text = (out / "model.md").read_text()
    for fact in (card["chain_run_id"], card["teacher_run_id"], card["dataset_sha256"], "500 ms = 8000 samples",
                 f"{card['macs']:,}", "int8"):
        assert fact in text, fact


def test_an_export_that_disagrees_with_its_checkpoint_is_refused(trained, tmp_path, monkeypatch):
    """The exporter is made to write a graph whose front end doubles its lowest quarter of bins."""
    import onnx
    from onnx import numpy_helper

    import distill.runtime.deployment.export as export
    from distill.core.export import ExportError, export_onnx

    def broken(model, input_samples, path):
        path = export_onnx(model, input_samples, path)
        graph = onnx.load(str(path))
        for basis in (t for t in graph.graph.initializer if t.name in ("frontend.cos", "frontend.sin")):
            bent = numpy_helper.to_array(basis).copy()
            bent[:, :32] *= 2.0  # the lowest quarter of the bins twice as loud
            basis.CopyFrom(numpy_helper.from_array(bent, basis.name))
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(ExportError, match=r"refused: .* \d+ clips: max \|Δ posterior\| [0-9.e+-]+ \(allowed 0.0001\)"):
        export.export_run(trained["chain_id"], out=tmp_path / "bad", int8=False, tracking=trained["server"].uri,
                          say=lambda line: None)
    assert not (tmp_path / "bad" / "model.onnx").exists()  # nothing a user could take for a good export


def test_the_registered_version_carries_the_card_and_loads_by_alias(trained):
    import mlflow

    client = MlflowClient(trained["server"].uri)
    version = client.get_model_version_by_alias("kws-500", "current")
    card = trained["card"]
    tags = version.tags
    assert tags["pld.chain_run_id"] == card["chain_run_id"] and tags["pld.teacher_run_id"] == card["teacher_run_id"]
    assert tags["pld.dataset_sha256"] == card["dataset_sha256"] and tags["pld.input_ms"] == "500"
    assert float(tags["pld.threshold"]) == pytest.approx(card["threshold"], abs=1e-6)
    assert tags["pld.test_acc_stream"] == f"{card['onnx']['fp32']['test_acc']['stream']:.4f}"
    assert version.run_id == card["stage_run_id"]  # lineage: the version sits in the stage's run
    mlflow.set_tracking_uri(trained["server"].uri)
    model = mlflow.pyfunc.load_model("models:/kws-500@current")
    assert tuple(model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, -1)  # clips of any length
    frame = model.predict(np.zeros((2, 8000), np.float32))
    assert list(frame.columns[:2]) == ["label", "score"] and set(frame.columns[2:]) == set(card["labels"])
    assert np.allclose(frame[card["labels"]].to_numpy().sum(1), 1, atol=1e-5)


def correct_clips(trained) -> list[tuple[np.ndarray, str]]:
    """Test clips (float) of distinct keywords that the exported model labels correctly."""
    from distill.core.export import OnnxSpotter
    from distill.runtime.deployment.serving import decide_clips
    from distill.runtime.execution.source import load_split_arrays

    card = trained["card"]
    run_dir = MlflowClient(trained["server"].uri).get_run(trained["chain_id"]).data.tags["pld.run_dir"]
    waves, labels = load_split_arrays(Path(run_dir) / "source", "test")
    waves = waves.astype(np.float32) / 32768
    classes, _ = decide_clips(OnnxSpotter(trained["out"] / "model.onnx"), waves, card)
    picked, seen = [], set()
    for wave, label, predicted in zip(waves, labels, classes):
        name = card["labels"][label]
        if predicted == label and name in KEYWORDS and name not in seen:
            seen.add(name)
            picked.append((wave, name))
    assert len(picked) >= 4, f"the model labels too few keyword clips correctly: {seen}"
    return picked


def test_mlflow_models_serve_answers_a_scoring_request_with_the_clips_label(trained):
    wave, label = correct_clips(trained)[0]
    port = _free_port()
    serve = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                              "models:/kws-500@current", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                             env=trained["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 120, serve, "mlflow models serve")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": [wave.tolist()]}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        row = answer["predictions"][0]
        assert row["label"] == label and row["score"] == pytest.approx(row[label])
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(timeout=30)


def test_pld_predict_finds_each_keyword_where_it_was_placed_and_nothing_in_the_silence(trained, tmp_path):
    clips = correct_clips(trained)[:4]
    rng = np.random.default_rng(7)
    gap = lambda seconds: (0.002 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)  # noqa: E731 (the corpus's noise floor)
    parts, placed = [gap(1.5)], []
    for wave, label in clips:
        offset = sum(len(p) for p in parts)
        burst = np.flatnonzero(np.abs(wave) > 0.02)  # where the keyword itself is in its clip
        placed.append((label, (offset + burst[0]) * 1000 / RATE, (offset + burst[-1]) * 1000 / RATE))
        parts += [wave, gap(rng.uniform(1.5, 2.5))]
    audio = np.concatenate(parts)
    stereo_48k = tmp_path / "long.wav"  # any rate and channel count: resampled and downmixed on the way in
    import torch
    import torchaudio

    up = torchaudio.functional.resample(torch.from_numpy(audio), RATE, 48000).numpy()
    sf.write(stereo_48k, np.stack([up, up], axis=1), 48000, subtype="PCM_16")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")

    proc = pld("predict", str(trained["out"] / "model.onnx"), str(stereo_48k), str(tmp_path / "missing.wav"),
               str(tmp_path / "garbage.wav"), "--json", cwd=tmp_path, env=trained["env"])
    assert proc.returncode == 1, proc.stderr[-3000:]  # two files could not be read; the long one was done
    found = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(found) == len(placed), (found, placed)
    for (label, start, end), hit in zip(placed, found):
        assert hit["keyword"] == label and hit["file"] == str(stereo_48k)
        # the detection's window holds the keyword, to ±100 ms
        assert hit["start_ms"] <= start + 100 and hit["end_ms"] >= end - 100, (hit, start, end)
        assert 0 < hit["score"] <= 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pld: error: ")]
    assert len(errors) == 2 and "missing.wav: no such file" in errors[0] and "garbage.wav" in errors[1]
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{len(placed)} detection(s) in 1 file(s)" in summary and "real-time factor" in summary
    assert "2 file(s) could not be read" in summary and "Traceback" not in proc.stderr

    # the same model by its registry name, as a table; threshold 1.0 fires on nothing
    proc = pld("predict", "models:/kws-500@current", str(stereo_48k), cwd=tmp_path, env=trained["env"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == [label for label, _, _ in placed]
    proc = pld("predict", str(trained["out"] / "model.onnx"), str(stereo_48k), "--threshold", "1.0", cwd=tmp_path,
               env=trained["env"])
    assert proc.returncode == 0 and proc.stdout.splitlines()[1:] == []
