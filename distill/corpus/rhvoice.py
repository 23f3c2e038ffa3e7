"""RHVoice through its command line (``RHVoice-test``): HMM-based parametric synthesis (HTS
models, its own vocoder) from voices recorded for it.

Why another engine: RHVoice's models, prosody and vocoder are its own, and its two English
voices recorded for it are Russian speakers reading English: an accent no other engine here has.
Its other English voices (alan, bdl, clb, slt) are built from the CMU ARCTIC recordings, whose
speakers the held-out engines outside the project speak with, so they are never used: a model
trained on them would be judged on voices it had heard. Debian packages it (``rhvoice`` and
``rhvoice-english``, non-free); `make install` installs them, and a missing one is reported
with the apt-get line. One process per utterance (~0.1 s); it keeps no state across processes,
so the same call gives the same samples.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

RHVOICE_VOICES = {"evgeniy-eng": "russian", "lyubov": "russian"}  # English read by Russian speakers
ARCTIC_VOICES = ("alan", "bdl", "clb", "slt")  # CMU ARCTIC's speakers: never used (see above)
VOICE_DIR = Path("/usr/share/RHVoice/voices")
INSTALL_HINT = ("apt-get install rhvoice rhvoice-english (Debian's non-free component; `make install` enables it "
                "and installs them)")
TIMEOUT_S = 60


@lru_cache(maxsize=1)
def binary() -> str:
    path = shutil.which("RHVoice-test")
    if path is None:
        raise RuntimeError(f"the rhvoice engine needs RHVoice-test on PATH; install it with `{INSTALL_HINT}`, "
                           "or synthesize without it (--engines)")
    return path


def check_voices(voices: Sequence[str]) -> None:
    """Fail early, naming the Debian packages, if RHVoice or any of `voices` is missing."""
    unknown = [v for v in voices if v not in RHVOICE_VOICES]
    if unknown:
        raise ValueError(f"unknown rhvoice voice(s) {unknown}; choose from {sorted(RHVOICE_VOICES)}")
    binary()
    missing = sorted(v for v in voices if not (VOICE_DIR / v).is_dir())
    if missing:
        raise RuntimeError(f"rhvoice voice(s) {missing} are not installed in {VOICE_DIR}; install them with "
                           f"`{INSTALL_HINT}`")


def rhvoice_synthesize(voice: str, texts: Sequence[str], tempos: Sequence[float], pitches: Sequence[float]
                       ) -> list[tuple[np.ndarray, int]]:
    """Each of `texts` said by `voice` at its tempo (a duration factor: 1 = the voice's own pace)
    and pitch factor: (float64 samples in [-1, 1], sample rate)."""
    if not (len(texts) == len(tempos) == len(pitches)):
        raise ValueError("rhvoice_synthesize: one tempo and pitch per text")
    check_voices([voice])
    out = []
    with tempfile.TemporaryDirectory(prefix="pld-rhvoice-") as tmp:
        for i, (text, tempo, pitch) in enumerate(zip(texts, tempos, pitches)):
            wav = Path(tmp) / f"{i}.wav"
            # -r and -t: whole percentages of the voice's own rate and pitch
            proc = subprocess.run([binary(), "-p", voice, "-r", str(round(100 / float(tempo))),
                                   "-t", str(round(100 * float(pitch))), "-o", str(wav)],
                                  input=text, capture_output=True, text=True, timeout=TIMEOUT_S)
            if proc.returncode or not wav.is_file() or wav.stat().st_size <= 44:
                raise RuntimeError(f"rhvoice voice {voice} could not say {text!r} (exit {proc.returncode}): "
                                   f"{(proc.stderr + proc.stdout).strip()[-300:]}")
            x, rate = sf.read(str(wav), dtype="float64", always_2d=True)
            out.append((x.mean(axis=1), int(rate)))
    return out
