"""Odd input at scale: over 200 generated malformed or unusual audio files (truncated and
flipped headers, huge declared sizes, random bytes, empty files, ID3 junk before RIFF, 8- to
64-bit and float samples, odd rates, up to 8 channels, a 10-minute file, names that are not
UTF-8) each end as a clip or as a counted quarantine row with its reason; nothing vanishes and
`pld data check` prints no traceback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from distill.data.audio import WHOLE_FILE, ClipPolicy, load_clip, resampling_rate
from distill.data.base import build_source_index, parse_dataset_options
from distill.data.check import scan


def _encoded(x: np.ndarray, rate: int, subtype: str, fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    sf.write(out, x, rate, subtype=subtype, format=fmt)
    return out.getvalue()


def write_odd_inputs(root: Path, seed: int = 0) -> dict[str, str]:
    """The files under ``root/<label>/``: clip id → the kind of oddity it has."""
    rng = np.random.default_rng(seed)
    good = _encoded(tone(1.0, 16000), 16000, "PCM_16")
    kinds: dict[str, str] = {}
    labels = ("yes", "no")
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes, kind: str) -> None:
        label = labels[len(kinds) % 2]
        with open(os.path.join(os.fsencode(root / label), os.fsencode(name)), "wb") as f:
            f.write(data)
        kinds[f"{label}/{name}"] = kind

    for i in range(40):
        put(f"truncated{i}.wav", good[: int(rng.integers(0, len(good)))], "truncated")
    for i in range(40):
        flipped = bytearray(good)
        for at in rng.integers(0, 44, size=int(rng.integers(1, 6))):
            flipped[at] = int(rng.integers(0, 256))
        put(f"flipped{i}.wav", bytes(flipped), "flipped header")
    for i in range(20):
        huge = bytearray(good)
        huge[4:8] = (0xFFFFFFF0).to_bytes(4, "little")
        huge[40:44] = int(rng.integers(2 ** 28, 2 ** 32 - 1)).to_bytes(4, "little")
        put(f"huge{i}.wav", bytes(huge), "huge declared size")
    for i in range(20):
        put(f"random{i}.wav", rng.bytes(int(rng.integers(1, 5000))), "random bytes")
    for i in range(10):
        put(f"empty{i}.wav", b"", "empty")
    for i in range(10):
        put(f"id3_{i}.wav", b"ID3\x03\x00\x00\x00\x00\x0f\x76" + rng.bytes(int(rng.integers(10, 500))) + good,
            "id3 before riff")
    formats = [("PCM_U8", "WAV"), ("PCM_24", "WAV"), ("FLOAT", "WAV"), ("DOUBLE", "WAV"), ("PCM_32", "WAV"),
               ("PCM_16", "FLAC"), ("PCM_24", "FLAC")]
    for i in range(42):
        subtype, fmt = formats[i % len(formats)]
        rate = 7999 if i == 6 else (8000, 11025, 22050, 44100, 48000, 96000)[i % 6]  # one coprime rate: slow
        x = tone((0.05, 0.5, 1.0, 2.7)[i % 4], rate, channels=(1, 2, 6, 8)[i % 4])
        put(f"unusual{i}.{'flac' if fmt == 'FLAC' else 'wav'}", _encoded(x, rate, subtype, fmt), "unusual but valid")
    for i in range(20):
        put(os.fsdecode(b"name\xff\xfe" + str(i).encode() + b".wav"), good, "name not UTF-8")
    for i in range(5):
        put(f"notes{i}.txt", b"not audio", "not audio")
    with sf.SoundFile(root / "yes" / "ten_minutes.wav", "w", 16000, 1, "PCM_16") as f:
        for _ in range(60):
            f.write(tone(10.0, 16000))
    kinds["yes/ten_minutes.wav"] = "ten minutes"
    return kinds


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    return root, write_odd_inputs(root)


def _problem_of(result, clip_id: str) -> str | None:
    shown = os.fsencode(clip_id).decode("utf-8", "backslashreplace")  # how a non-UTF-8 name is reported
    rows = result.quarantine[result.quarantine.clip_id == shown]
    return rows.problem.iloc[0] if len(rows) else None


def test_every_odd_file_is_a_clip_or_a_counted_quarantine_with_its_reason(odd):
    root, kinds = odd
    assert len(kinds) >= 200
    options = parse_dataset_options({"name": "folder", "path": str(root)})
    result = scan(build_source_index(options), options)
    assert result.total == len(kinds)  # nothing vanished
    assert (result.quarantine.problem.str.len() > 0).all()
    ended = Counter()
    for clip_id, kind in kinds.items():
        problem = _problem_of(result, clip_id)
        good = clip_id in set(result.good.clip_id)
        assert good != (problem is not None), clip_id  # exactly one of the two
        ended[(kind, "clip" if good else problem.split(":")[0].split(" (")[0])] += 1
    by_kind = lambda kind: {how for (k, how), n in ended.items() if k == kind}  # noqa: E731
    assert by_kind("unusual but valid") == {"clip"}  # resampled, downmixed, padded or cropped
    assert by_kind("ten minutes") == {"clip"}
    assert "cropped" in result.good.set_index("clip_id").applied["yes/ten_minutes.wav"]
    assert by_kind("empty") == {"empty file"}
    assert by_kind("name not UTF-8") == {"file name is not valid UTF-8"}
    assert all(how.startswith("unsupported format") for how in by_kind("not audio"))
    for kind in ("truncated", "huge declared size", "random bytes"):
        assert "clip" not in by_kind(kind), (kind, by_kind(kind))
    assert any(how.startswith("implausible sample rate") for how in by_kind("flipped header"))  # a corrupt rate is refused, not resampled


def test_pld_data_check_of_the_odd_folder_counts_everything_without_a_traceback(odd, tmp_path):
    root, kinds = odd
    # A fresh wrapper process runs the check as its only child and writes that child's peak RSS:
    # this process's RUSAGE_CHILDREN would also hold every earlier test's subprocesses.
    peak_file = tmp_path / "peak_kib"
    wrapper = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", wrapper, str(peak_file), sys.executable, "-m", "distill.cli", "data",
                           "check", f"folder:{root}", "--json"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]  # problems found: scripts can gate on it
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["files"] == len(kinds) == report["clips"] + len(report["problems"])
    assert sum(p["problem"].startswith("file name is not valid UTF-8") for p in report["problems"]) == 20
    # a coarse ceiling on the whole check, torch and pandas included; it cannot tell a whole-file read of the
    # 10-minute file (37 MiB) from a one-clip read: the test below bounds that read tightly
    peak_mib = int(peak_file.read_text()) / 1024
    assert peak_mib < 2048, peak_mib


def test_the_ten_minute_file_is_read_as_one_clip_not_whole(odd):
    root, _ = odd
    clip_id = "yes/ten_minutes.wav"
    whole_mib = sf.info(root / clip_id).frames * 4 / 2 ** 20  # the whole file as float32, what sf.read would hold
    assert whole_mib > 30  # the bound below only separates the two reads while the file is this long
    options = parse_dataset_options({"name": "folder", "path": str(root)})
    index = build_source_index(options)
    one = replace(index, clips=index.clips[index.clips.clip_id == clip_id], rejected=index.rejected.iloc[:0])
    # tracemalloc counts numpy's buffers: the product's read peaks near 0.3 MiB, a whole-file read near 37 MiB
    tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = scan(one, options, workers=1)  # what `pld data check` runs, for this one file
        peak_mib = tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        if not tracing:
            tracemalloc.stop()
    assert list(result.good.clip_id) == [clip_id] and "cropped" in result.good.applied.iloc[0]
    assert peak_mib < 4, f"reading one 1 s clip of a {whole_mib:.0f} MiB file peaked at {peak_mib:.1f} MiB"


def test_a_coprime_sample_rate_is_resampled_in_bounded_memory(tmp_path):
    x = tone(1.0, 7999)
    sf.write(tmp_path / "odd.wav", x, 7999, subtype="FLOAT")
    sf.write(tmp_path / "even.wav", x, 8000, subtype="FLOAT")
    assert resampling_rate(7999, 16000) == 8000 and resampling_rate(11025, 16000) == 11025
    probe = ("import resource, sys; from distill.data.audio import ClipPolicy, load_clip; "
             "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
             "load_clip(sys.argv[1], -1, 16000, 16000, ClipPolicy(), key='odd'); "
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    grew_mib = float(subprocess.run([sys.executable, "-c", probe, str(tmp_path / "odd.wav")], capture_output=True,
                                    text=True, check=True, timeout=120).stdout)
    assert grew_mib < 200, grew_mib  # the exact 7999 → 16000 kernel took about 2 GB
    odd = load_clip(str(tmp_path / "odd.wav"), WHOLE_FILE, 16000, 16000, ClipPolicy(), key="odd")
    even = load_clip(str(tmp_path / "even.wav"), WHOLE_FILE, 16000, 16000, ClipPolicy(), key="even")
    assert np.array_equal(odd.waveform, even.waveform) and "resampled" in odd.applied
