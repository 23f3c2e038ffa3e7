"""Shared fixtures: small Speech Commands-layout corpora written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


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
