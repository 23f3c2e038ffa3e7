"""MBROLA through espeak-ng's command line: diphone synthesis from recordings of real speakers.

Why another engine: MBROLA concatenates diphones cut from human recordings (MBR-PSOLA), so its
voices carry real speakers' timbre, unlike espeak-ng's formants, and each voice is a different
speaker. espeak-ng is only the front end here (text to phonemes and prosody); the `-en` voices
map English phonemes onto another language's diphones, so they speak English with that
language's sounds. Both come from Debian: `espeak-ng` (main), `mbrola` (contrib) and the
`mbrola-*` voices (non-free: free for non-commercial use); `make install` installs them, and a
missing one is reported with the apt-get line. Why the Debian espeak-ng and not the wheel's
library: the wheel ships no MBROLA phoneme tables (espeak-ng-data/mbrola_ph), and those are
compiled for one espeak-ng version.

Two processes per utterance (~20 ms): espeak-ng and mbrola keep no state across processes, so
the same call gives the same samples.
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

# voice -> family. A voice is the MBROLA database's name; English ones are spoken by espeak-ng's
# voice mb-<voice>, the others by mb-<voice>-en (English text on that language's diphones).
MBROLA_VOICES: dict[str, str] = {
    "us1": "english", "us2": "english", "us3": "english", "en1": "english",
    "af1": "afrikaans",
    "de1": "german", "de2": "german", "de3": "german", "de4": "german", "de5": "german", "de6": "german",
    "fr1": "french", "fr4": "french",
    "gr2": "greek", "hu1": "hungarian", "nl2": "dutch", "pl1": "polish", "ro1": "romanian",
    "sw1": "swedish", "sw2": "swedish",
}
VOICE_DIRS = (Path("/usr/share/mbrola"),)  # where Debian's mbrola-* put them, and espeak-ng looks
VOLUME = 0.5      # mbrola's -v ratio: fr4 reaches full scale at 1
TIMEOUT_S = 60


def package(voice: str) -> str:
    return f"mbrola-{voice}"


def install_hint(voices: Sequence[str] = ()) -> str:
    names = " ".join(package(v) for v in sorted(voices or MBROLA_VOICES))
    return (f"apt-get install espeak-ng mbrola {names} (Debian's contrib and non-free components; "
            "`make install` enables them and installs these)")


def espeak_voice(voice: str) -> str:
    return f"mb-{voice}" if MBROLA_VOICES[voice] == "english" else f"mb-{voice}-en"


@lru_cache(maxsize=1)
def binaries() -> tuple[str, str]:
    """(espeak-ng, mbrola) on PATH, or a RuntimeError saying how to install them."""
    found = {name: shutil.which(name) for name in ("espeak-ng", "mbrola")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise RuntimeError(f"the mbrola engine needs {' and '.join(missing)} on PATH; install with "
                           f"`{install_hint()}`, or synthesize without it (--engines)")
    return found["espeak-ng"], found["mbrola"]


def _voice_file(voice: str) -> Path | None:
    return next((d / voice / voice for d in VOICE_DIRS if (d / voice / voice).is_file()), None)


def check_voices(voices: Sequence[str]) -> None:
    """Fail early, naming the Debian packages, if espeak-ng, mbrola or any of `voices` is missing."""
    unknown = [v for v in voices if v not in MBROLA_VOICES]
    if unknown:
        raise ValueError(f"unknown mbrola voice(s) {unknown}; choose from {sorted(MBROLA_VOICES)}")
    binaries()
    missing = sorted({v for v in voices if _voice_file(v) is None})
    if missing:
        raise RuntimeError(f"mbrola voice(s) {missing} are not installed; install them with "
                           f"`{install_hint(missing)}`")


def mbrola_synthesize(voice: str, texts: Sequence[str], tempos: Sequence[float], pitches: Sequence[float]
                      ) -> list[tuple[np.ndarray, int]]:
    """Each of `texts` spoken by `voice` at its tempo (a duration factor: 1 = espeak-ng's default
    pace, 2 = twice as long) and pitch factor: (float64 samples in [-1, 1], sample rate: 16 or
    22.05 kHz, the database's own). espeak-ng writes the phonemes and prosody; mbrola stretches
    time and pitch itself (-t, -f), so any tempo is reachable (espeak-ng's own rate stops at 80
    words per minute) and a diphone the database lacks is an error, not silence."""
    if not (len(texts) == len(tempos) == len(pitches)):
        raise ValueError("mbrola_synthesize: one tempo and pitch per text")
    check_voices([voice])
    espeak, mbrola = binaries()
    database = str(_voice_file(voice))
    out = []
    with tempfile.TemporaryDirectory(prefix="pld-mbrola-") as tmp:
        for i, (text, tempo, pitch) in enumerate(zip(texts, tempos, pitches)):
            pho, wav = Path(tmp) / f"{i}.pho", Path(tmp) / f"{i}.wav"
            front = subprocess.run([espeak, "-q", "--pho", "-v", espeak_voice(voice), "--", text],
                                   capture_output=True, text=True, timeout=TIMEOUT_S)
            if front.returncode or not front.stdout.strip():
                raise RuntimeError(f"espeak-ng ({espeak_voice(voice)}) gave no phonemes for {text!r} "
                                   f"(exit {front.returncode}): {front.stderr.strip()[-300:]}")
            pho.write_text(front.stdout)
            back = subprocess.run([mbrola, "-t", f"{float(tempo):.4f}", "-f", f"{float(pitch):.4f}",
                                   "-v", f"{VOLUME:g}", database, str(pho), str(wav)],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
            if back.returncode or not wav.is_file() or wav.stat().st_size <= 44:
                raise RuntimeError(f"mbrola voice {voice} could not say {text!r} (exit {back.returncode}): "
                                   f"{(back.stderr + back.stdout).strip()[-300:]}")
            x, rate = sf.read(str(wav), dtype="float64", always_2d=True)
            out.append((x.mean(axis=1), int(rate)))
    return out
