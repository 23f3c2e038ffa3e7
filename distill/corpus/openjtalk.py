"""Open JTalk through pyopenjtalk: a Japanese HMM (HTS) synthesizer saying the English words as
Japanese loanwords.

Why another engine: Speech Commands' speakers include many whose first language is not English;
Open JTalk says each word the way Japanese speakers borrow it (``stop`` → sutoppu), with its own
vocoder, prosody and timbre, unlike any English engine here. The ``pyopenjtalk-plus`` wheel
bundles the dictionary and its one voice (``mei``, the MMDAgent voice), so it runs offline. A
speaker's timbre varies with the voice's pitch, shifted in half-tones, and its tempo with the
synthesis speed. In-process and stateless: the same call gives the same samples.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

OPENJTALK_VOICES = {"mei": "japanese"}  # the voice inside the wheel
# Each word in katakana, as it is borrowed into Japanese (the corpus's 30 words).
KATAKANA: dict[str, str] = {
    "yes": "イエス", "no": "ノー", "up": "アップ", "down": "ダウン", "left": "レフト", "right": "ライト",
    "on": "オン", "off": "オフ", "stop": "ストップ", "go": "ゴー",
    "bed": "ベッド", "bird": "バード", "cat": "キャット", "dog": "ドッグ", "eight": "エイト", "five": "ファイブ",
    "four": "フォー", "happy": "ハッピー", "house": "ハウス", "marvin": "マービン", "nine": "ナイン", "one": "ワン",
    "seven": "セブン", "sheila": "シーラ", "six": "シックス", "three": "スリー", "tree": "ツリー", "two": "ツー",
    "wow": "ワオ", "zero": "ゼロ",
}
HALF_TONES_PER_OCTAVE = 12  # a pitch factor (pico's and mbrola's convention) p is 12·log2(p) half-tones
VOLUME = 0.5  # the voice's int16-scaled output passes full scale on some slow words

@lru_cache(maxsize=1)
def _pyopenjtalk():
    try:
        import pyopenjtalk
    except ImportError as e:
        raise RuntimeError(f"the openjtalk engine needs pyopenjtalk-plus ({e}); install it with "
                           "`pip install pyopenjtalk-plus`, or synthesize without it (--engines)") from e
    return pyopenjtalk


def check_voices(voices: Sequence[str]) -> None:
    unknown = [v for v in voices if v not in OPENJTALK_VOICES]
    if unknown:
        raise ValueError(f"unknown openjtalk voice(s) {unknown}; choose from {sorted(OPENJTALK_VOICES)}")
    _pyopenjtalk()


def openjtalk_synthesize(voice: str, texts: Sequence[str], tempos: Sequence[float], pitches: Sequence[float]
                         ) -> list[tuple[np.ndarray, int]]:
    """Each of `texts` (corpus words) said by `voice` at its tempo (a duration factor: 1 = the
    voice's own pace) and pitch factor: (float64 samples in [-1, 1], sample rate)."""
    if not (len(texts) == len(tempos) == len(pitches)):
        raise ValueError("openjtalk_synthesize: one tempo and pitch per text")
    check_voices([voice])
    missing = sorted({t for t in texts if t not in KATAKANA})
    if missing:
        raise ValueError(f"openjtalk: no katakana for {missing}; add them to distill.corpus.openjtalk.KATAKANA")
    jtalk = _pyopenjtalk()
    out = []
    for text, tempo, pitch in zip(texts, tempos, pitches):
        half_tone = HALF_TONES_PER_OCTAVE * float(np.log2(pitch))
        x, rate = jtalk.tts(KATAKANA[text], speed=1.0 / float(tempo), half_tone=half_tone)
        out.append((np.asarray(x, dtype=np.float64) * (VOLUME / 32768.0), int(rate)))
    return out
