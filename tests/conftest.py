"""Shared fixtures: small Speech Commands-layout corpora written on the fly, a local Ray, and an
S3 server on 127.0.0.1. Tests under ``tests/integration/`` get the ``integration`` marker here."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    """The folder decides: everything under tests/integration/ runs real Ray and MLflow (minutes)."""
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray for one test module (import ray only where a test asks for it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_sc_layout(root: Path, words: list[str], speakers: list[str], *, val: set[str] = frozenset(),
                    test: set[str] = frozenset(), noise_seconds: float = 3.0, rate: int = 16000) -> Path:
    """Tone bursts in the Speech Commands layout; speakers in ``val``/``test`` go to those lists."""
    rng = np.random.default_rng(0)
    val_list, test_list = [], []
    for w, word in enumerate(words):
        (root / word).mkdir(parents=True, exist_ok=True)
        for speaker in speakers:
            x = np.zeros(rate, np.float32)
            at = rng.integers(0, rate // 2)
            x[at:at + rate // 4] = 0.3 * np.sin(2 * np.pi * (200 + 50 * w) * np.arange(rate // 4) / rate)
            name = f"{speaker}_nohash_0.wav"
            sf.write(root / word / name, x, rate, subtype="PCM_16")
            (val_list if speaker in val else test_list if speaker in test else []).append(f"{word}/{name}")
    (root / "_background_noise_").mkdir(parents=True, exist_ok=True)
    sf.write(root / "_background_noise_" / "white.wav", 0.05 * rng.standard_normal(int(noise_seconds * rate)), rate,
             subtype="PCM_16")
    (root / "validation_list.txt").write_text("".join(f"{x}\n" for x in sorted(val_list)))
    (root / "testing_list.txt").write_text("".join(f"{x}\n" for x in sorted(test_list)))
    return root


@pytest.fixture
def sc_root(tmp_path) -> Path:
    keywords = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    speakers = [f"{i:08x}" for i in range(10)]
    return write_sc_layout(tmp_path / "sc", keywords + ["bed", "cat", "dog"], speakers,
                           val={speakers[0]}, test={speakers[1], speakers[2]})


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_malformed(folder: Path) -> dict[str, str]:
    """Files that cannot become clips, one or more of each kind: name → the reason expected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / ".good.tmp.wav"
    sf.write(good, tone(1.0, 16000), 16000, subtype="PCM_16")
    wav = good.read_bytes()
    good.unlink()
    flac_path, ogg_path = folder / ".t.flac", folder / ".t.ogg"
    sf.write(flac_path, tone(1.0, 16000), 16000)
    sf.write(ogg_path, tone(1.0, 16000), 16000)
    flac, ogg = flac_path.read_bytes(), ogg_path.read_bytes()
    flac_path.unlink()
    ogg_path.unlink()
    rng = np.random.default_rng(1)
    expected = {}

    def put(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = reason

    put("empty.wav", b"", "empty file")
    put("empty.flac", b"", "empty file")
    put("header_only.wav", wav[:44], "truncated")  # declares a second of data, holds none
    zero = bytearray(wav[:44])
    zero[40:44] = (0).to_bytes(4, "little")  # data chunk of size 0
    zero[4:8] = (36).to_bytes(4, "little")
    put("zero_frames.wav", bytes(zero), "no audio")
    put("truncated_half.wav", wav[: len(wav) // 2], "truncated")
    put("truncated_tail.wav", wav[:-100], "truncated")
    put("random_bytes.wav", rng.bytes(3000), "unreadable")
    put("text_as_wav.wav", b"this is not audio at all\n" * 20, "unreadable")
    put("riff_garbage.wav", b"RIFF" + (5000).to_bytes(4, "little") + b"WAVE" + rng.bytes(200), "unreadable")
    put("truncated.flac", flac[: len(flac) // 3], "unreadable")
    put("random.flac", rng.bytes(2000), "unreadable")
    put("truncated.ogg", ogg[: len(ogg) // 3], "unreadable")
    put("random.ogg", rng.bytes(2000), "unreadable")
    put("song.mp3", rng.bytes(2000), "unsupported format")
    put("notes.txt", b"recorded on tuesday\n", "unsupported format")
    put("clip.m4a", rng.bytes(500), "unsupported format")
    put("noextension", rng.bytes(500), "unsupported format")
    put("clip.aiff", rng.bytes(500), "unsupported format")
    nan = tone(1.0, 16000)
    nan[100:200] = np.nan
    sf.write(folder / "nan_samples.wav", nan, 16000, subtype="FLOAT")
    expected["nan_samples.wav"] = "not audio"
    inf = tone(1.0, 16000)
    inf[5] = np.inf
    sf.write(folder / "inf_samples.wav", inf, 16000, subtype="FLOAT")
    expected["inf_samples.wav"] = "not audio"
    (folder / "broken_link.wav").symlink_to(folder / "does_not_exist.wav")
    expected["broken_link.wav"] = "missing"
    (folder / "a_directory.wav").mkdir()
    expected["a_directory.wav"] = "missing"
    return expected


MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")


@pytest.fixture(autouse=True)
def fresh_mlflow_state():
    """MLflow keeps the tracking URI and the active experiment per process, and exports both as
    environment variables for subprocesses, so a test that sets them would steer the next test
    (an experiment id from one test's store looked up in another's). Each test starts clean."""
    saved = {name: os.environ.get(name) for name in MLFLOW_ENV}
    yield
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        while fluent.active_run() is not None:
            fluent.end_run()
        fluent._active_experiment_id = None
        sys.modules["mlflow.tracking._tracking_service.utils"]._tracking_uri = None
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None, what: str = "the server",
              headers: dict[str, str] | None = None) -> None:
    """Poll ``url`` (with ``headers``) until it answers; fail if ``proc`` exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2).read()
            return
        except OSError:
            assert proc is None or proc.poll() is None, f"{what} exited (code {proc.returncode})"
            assert time.monotonic() < deadline, f"{what} did not come up within {seconds:.0f} s"
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 and a bucket; the AWS environment pointed at it (pyarrow,
    Ray Data and Ray Train all read AWS_ENDPOINT_URL), restored afterwards."""
    import pyarrow.fs as pafs

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
        yield {"bucket": "s3://pld-test", "env": env, "port": port}
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MlflowServer:
    """`mlflow server` on a fixed port, stopped (SIGKILL, by process group) and started at will.
    ``admin_password``: with MLflow's authentication app (basic-auth; users in SQLite beside the
    runs, admin ``admin``, every other user READ on experiments it does not own)."""

    def __init__(self, root: Path, admin_password: str | None = None):
        self.root, self.port, self.proc = root, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"
        self.admin_password = admin_password

    def start(self) -> None:
        env, auth = dict(os.environ), []
        if self.admin_password:
            (self.root / "auth.ini").write_text(
                "[mlflow]\ndefault_permission = READ\nadmin_username = admin\n"
                f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(self.root / "auth.ini"), MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                       MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-csrf-key")
            auth = ["--app-name", "basic-auth"]
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", *auth, "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", (self.root / "artifacts").as_uri()],
            cwd=self.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180  # a loaded 2-core machine has taken over 90 s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)




class Gate:
    """A TCP forwarder from a port of its own to ``target`` (127.0.0.1), closed and opened at will.
    ``close()`` stops listening and resets every open connection, so clients see the service as
    down (connection refused); ``open()`` listens again on the same port. moto keeps its buckets
    in memory, so an object-store outage is injected here rather than by stopping moto."""

    def __init__(self, target_port: int):
        self.target, self.port = target_port, _free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        with self.lock:
            for conn in self.conns:
                try:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                    conn.close()
                except OSError:
                    pass
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def write_band_layout(root: Path, words: list[str], speakers: list[str], *, val: set[str] = frozenset(),
                      test: set[str] = frozenset(), rate: int = 16000, seed: int = 0) -> Path:
    """Like ``write_sc_layout``, but each word is a burst of noise in a band of its own (300 ms to
    500 ms long, anywhere in the clip) over a low noise floor: broadband like speech, and easy
    enough that a small model learns it in a minute, so tests can count on correct predictions."""
    rng = np.random.default_rng(seed)
    freqs = np.fft.rfftfreq(rate, 1 / rate)
    val_list, test_list = [], []
    for w, word in enumerate(words):
        (root / word).mkdir(parents=True, exist_ok=True)
        centre = 250 * 1.3 ** w  # 250 Hz … 5.8 kHz for 12 words
        band = np.exp(-0.5 * ((freqs - centre) / (0.08 * centre)) ** 2)
        for speaker in speakers:
            burst = np.fft.irfft(np.fft.rfft(rng.standard_normal(rate)) * band, rate)
            length = int(rng.integers(rate * 3 // 10, rate // 2))
            at = int(rng.integers(0, rate - length))
            x = 0.002 * rng.standard_normal(rate)
            x[at:at + length] += burst[:length] / np.abs(burst).max() * rng.uniform(0.2, 0.5) * np.hanning(length)
            name = f"{speaker}_nohash_0.wav"
            sf.write(root / word / name, x.astype(np.float32), rate, subtype="PCM_16")
            (val_list if speaker in val else test_list if speaker in test else []).append(f"{word}/{name}")
    (root / "_background_noise_").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        sf.write(root / "_background_noise_" / f"floor{i}.wav", 0.002 * rng.standard_normal(20 * rate), rate,
                 subtype="PCM_16")
    (root / "validation_list.txt").write_text("".join(f"{x}\n" for x in sorted(val_list)))
    (root / "testing_list.txt").write_text("".join(f"{x}\n" for x in sorted(test_list)))
    return root
