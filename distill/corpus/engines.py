"""The speech engines of the synthetic corpus, behind one call: `speak_batch`.

| engine   | technique                                   | voices (families)                          | from |
|----------|---------------------------------------------|--------------------------------------------|------|
| espeak   | formant synthesis                           | 8 English accents x 48 timbre variants     | the espeakng-loader wheel (distill.corpus.espeak) |
| festival | diphone, unit selection, HTS                | FESTIVAL_VOICES (english, czech, finnish, russian, italian, catalan) | Debian festival + festvox-* (distill.corpus.festival) |
| pico     | SVOX Pico, HMM-based parametric             | en-US, en-GB                               | the py-nanotts wheel |
| hibari   | neural (int8 ONNX, distilled from Kokoro)   | heart (US English)                         | the hibari-tts wheel |
| mbrola   | diphones of real speakers (MBR-PSOLA)       | MBROLA_VOICES (english: us1-3, en1; 9 other languages' -en voices) | Debian espeak-ng, mbrola + mbrola-* (distill.corpus.mbrola) |
| openjtalk | HMM-based parametric (HTS), Japanese       | mei, the words as Japanese loanwords       | the pyopenjtalk-plus wheel (distill.corpus.openjtalk) |
| rhvoice  | HMM-based parametric (HTS), its own vocoder | evgeniy-eng, lyubov (English, Russian speakers) | Debian rhvoice + rhvoice-english (distill.corpus.rhvoice) |

Never used, by design: flite (any voice), piper, and Festival's kal_diphone and
cmu_us_slt_arctic_hts voices: they are kept for held-out evaluation outside the project; nor
RHVoice's voices built from the CMU ARCTIC speakers, whom those engines speak with.

A *family* is a group of voices built alike (one language, one group of builders); a corpus
holds out whole engines or whole families as its unseen-engine parts (`parse_family`).
espeak is driven utterance by utterance (distill.corpus.speaking.speak_word); the others speak a
speaker's whole vocabulary in one call here, each utterance at its own tempo (a duration
factor: 1 = the voice's own pace, 2 = twice as long) and, for pico, its pitch factor.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from functools import lru_cache
from typing import Sequence

import numpy as np

from distill.corpus.festival import FESTIVAL_VOICES, festival_synthesize
from distill.corpus.mbrola import MBROLA_VOICES, mbrola_synthesize
from distill.corpus.openjtalk import OPENJTALK_VOICES, openjtalk_synthesize
from distill.corpus.rhvoice import RHVOICE_VOICES, rhvoice_synthesize

ESPEAK_FAMILY = "english"
PICO_VOICES = {"en-US": "english", "en-GB": "english"}
HIBARI_VOICES = {"heart": "english"}  # the one voice inside the wheel; the others download, so are not offered
PICO_RATE, HIBARI_RATE = 16_000, 24_000
PICO_VOLUME = 0.5  # pico's default volume clips on single words


def engine_voices(engine: str, espeak_voices: Sequence[str] = ()) -> dict[str, str]:
    """voice -> family of `engine`."""
    if engine == "espeak":
        return {v: ESPEAK_FAMILY for v in espeak_voices}
    if engine == "festival":
        return {v: fam for v, (_, fam) in FESTIVAL_VOICES.items()}
    if engine == "pico":
        return dict(PICO_VOICES)
    if engine == "hibari":
        return dict(HIBARI_VOICES)
    if engine == "mbrola":
        return dict(MBROLA_VOICES)
    if engine == "openjtalk":
        return dict(OPENJTALK_VOICES)
    if engine == "rhvoice":
        return dict(RHVOICE_VOICES)
    raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")


ENGINES = ("espeak", "festival", "pico", "hibari", "mbrola", "openjtalk", "rhvoice")


def parse_family(spec: str, espeak_voices: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
    """"ENGINE" (every voice of it) or "ENGINE:FAMILY" -> (engine, voices)."""
    engine, _, family = str(spec).partition(":")
    voices = engine_voices(engine, espeak_voices)  # ValueError for an unknown engine
    chosen = tuple(v for v, f in voices.items() if not family or f == family)
    if not chosen:
        families = sorted(set(voices.values()))
        raise ValueError(f"{spec!r}: engine {engine} has no voice family {family!r}; its families: {families}")
    return engine, chosen


@lru_cache(maxsize=1)
def _pico():
    try:
        from py_nanotts import NanoTTS
    except ImportError as e:
        raise RuntimeError(f"the pico engine needs py-nanotts ({e}); install it with `pip install py-nanotts`") from e
    return NanoTTS()


@lru_cache(maxsize=1)
def _hibari():
    try:
        from hibari import Hibari
    except ImportError as e:
        raise RuntimeError(f"the hibari engine needs hibari-tts ({e}); install it with `pip install hibari-tts`") from e
    return Hibari(threads=1)


def _pico_in_fresh_process(voice: str, texts: Sequence[str], tempos: Sequence[float],
                           pitches: Sequence[float]) -> list[np.ndarray]:
    """Pico keeps state in its C library from one utterance to the next, even across NanoTTS
    instances (measured: the same word differs after another one), so each batch is spoken by a
    fresh interpreter (`python -m distill.corpus.engines`): a speaker's clips then depend only on
    the speaker, never on which worker spoke what before. ~0.1 s per batch."""
    _pico()  # the import error, with its install hint, here rather than in the child
    request = json.dumps({"voice": voice, "items": [[t, 1.0 / tempo, float(p)]
                                                     for t, tempo, p in zip(texts, tempos, pitches)]})
    proc = subprocess.run([sys.executable, "-m", "distill.corpus.engines"], input=request.encode(),
                          capture_output=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"pico failed with voice {voice}: {proc.stderr.decode(errors='replace')[-500:]}")
    out, pos = [], 0
    for _ in texts:
        (n,) = struct.unpack_from("<I", proc.stdout, pos)
        out.append(np.frombuffer(proc.stdout, np.int16, n, pos + 4).astype(np.float64))
        pos += 4 + 2 * n
    return out


def _pico_child() -> None:
    request = json.loads(sys.stdin.buffer.read())
    tts = _pico()
    for text, speed, pitch in request["items"]:
        pcm = tts.speak(text, voice=request["voice"], speed=speed, pitch=pitch, volume=PICO_VOLUME)
        sys.stdout.buffer.write(struct.pack("<I", len(pcm) // 2) + pcm)


def check_engine(engine: str, voices: Sequence[str]) -> None:
    """Fail early, saying how to install it, if `engine` or one of `voices` cannot speak."""
    if engine == "festival":
        from distill.corpus.festival import check_voices
        check_voices(voices)
    elif engine == "pico":
        _pico()
    elif engine == "hibari":
        _hibari()
    elif engine == "mbrola":
        from distill.corpus.mbrola import check_voices
        check_voices(voices)
    elif engine == "openjtalk":
        from distill.corpus.openjtalk import check_voices
        check_voices(voices)
    elif engine == "rhvoice":
        from distill.corpus.rhvoice import check_voices
        check_voices(voices)


def speak_batch(engine: str, voice: str, texts: Sequence[str], tempos: Sequence[float],
                pitches: Sequence[float] | None = None, seeds: Sequence[int] | None = None
                ) -> list[tuple[np.ndarray, int]]:
    """Each text spoken by `voice` of `engine` (festival, pico, hibari, mbrola, openjtalk or
    rhvoice): (float64 samples in [-1, 1], sample rate). tempo: duration factor; pitch: the
    pitch factor of pico, mbrola, openjtalk and rhvoice; seed: hibari's."""
    n = len(texts)
    pitches = list(pitches) if pitches is not None else [1.0] * n
    seeds = list(seeds) if seeds is not None else [0] * n
    if not (len(tempos) == len(pitches) == len(seeds) == n):
        raise ValueError("speak_batch: one tempo, pitch and seed per text")
    if engine == "festival":
        return festival_synthesize(voice, texts, tempos)
    if engine == "pico":
        if voice not in PICO_VOICES:
            raise ValueError(f"unknown pico voice {voice!r}; choose from {sorted(PICO_VOICES)}")
        return [(x / 32768.0, PICO_RATE) for x in _pico_in_fresh_process(voice, texts, tempos, pitches)]
    if engine == "hibari":
        if voice not in HIBARI_VOICES:
            raise ValueError(f"unknown hibari voice {voice!r}; choose from {sorted(HIBARI_VOICES)}")
        tts = _hibari()
        return [(np.asarray(tts(t, speed=1.0 / tempo, seed=int(s)), dtype=np.float64), HIBARI_RATE)
                for t, tempo, s in zip(texts, tempos, seeds)]
    if engine == "mbrola":
        return mbrola_synthesize(voice, texts, tempos, pitches)
    if engine == "openjtalk":
        return openjtalk_synthesize(voice, texts, tempos, pitches)
    if engine == "rhvoice":
        return rhvoice_synthesize(voice, texts, tempos, pitches)
    raise ValueError(f"speak_batch: engine {engine!r} is not a batch engine (festival, pico, hibari, mbrola, "
                     "openjtalk, rhvoice)")


if __name__ == "__main__":  # the fresh process of _pico_in_fresh_process
    _pico_child()
