"""Synthetic keyword-spotting corpus in the exact layout of Google Speech Commands.

Why this exists: the whole PLD pipeline (loading, teacher training, distillation,
evaluation) must run end to end on a laptop or CI box without downloading the 2.3 GB
Speech Commands archive. Words are spoken by espeak-ng -- the shared library and voice
data shipped inside the `espeakng_loader` wheel, driven through ctypes -- so neither
system packages nor network access are needed.

Layout written under `out` (the same as speech_commands_v0.02, plus two extra files):

    <out>/<word>/<speaker>_nohash_<k>.wav   16 kHz mono PCM_16, exactly 16000 samples
    <out>/_background_noise_/*.wav          long noise recordings (generated with numpy)
    <out>/validation_list.txt               "word/file.wav" per line, sorted
    <out>/testing_list.txt                  (files in neither list are training data)
    <out>/synth_manifest.csv                one row per clip: who says it, where the speech is, ...
    <out>/synth.json                        parameters and counts; written LAST, so its
                                            presence means the corpus is complete

Design notes
- A "speaker" is an espeak voice (accent) x variant (timbre) x pitch x speaking rate. Its
  id is 8 hex digits hashed from (seed, speaker index), like the real dataset's ids.
- Splits are speaker-disjoint (as in Speech Commands), so validation/test measure
  generalisation to voices never heard in training.
- The word is placed at a uniformly random offset inside the 1 s clip, never always
  centred: a model (or a crop) that only looks at part of the clip must sometimes miss it.
  Words longer than MAX_SPEECH_S are re-synthesised at a faster speaking rate (the rate
  written to the manifest is the one actually used); only if that still fails after a few
  tries is the word cut, with a short fade-out.
- Determinism: a clip depends only on (seed, speaker index, word, k), never on which
  worker process renders it or in what order. espeak-ng keeps DSP state in C statics
  (pitch-flutter phase, AGC, filter memories) from one utterance to the next, so two
  syntheses of the same word in one process differ. We therefore dlopen a fresh instance
  of the library for every utterance and dlclose it afterwards, which resets all of that
  state; each process checks once that this really works (see _check_fresh_state). A fresh
  instance would also re-scan all ~245 voice files on every utterance, unless the voice can
  be opened directly by name: make_voice_dir provides that (about 8x faster synthesis).
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf

# ----------------------------------------------------------------------------------------
# Vocabulary, layout and synthesis constants

KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Speech Commands' auxiliary words: the "unknown" class in the 12-class task.
UNKNOWN_WORDS: tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
    "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
)

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000  # exactly 1 s, like every Speech Commands clip
BACKGROUND_DIR = "_background_noise_"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
MANIFEST = "synth_manifest.csv"
SYNTH_JSON = "synth.json"
IN_PROGRESS = ".synth_in_progress"  # marks a half-written corpus that we may clean up
MANIFEST_COLUMNS = ("path", "word", "speaker", "voice", "variant", "pitch", "rate", "split",
                    "speech_start_ms", "speech_end_ms", "gain_db", "snr_db", "noise_file")
SPLITS = ("train", "validation", "testing")

# English voices of the bundled espeak-ng data (en-Shaw is a spelling variant, not an accent).
VOICES: tuple[str, ...] = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Timbre variants (files in espeak-ng-data/voices/!v). Left out on purpose: the robotic or
# effect voices, and those whose output clips at full scale or runs much slower than the rest.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andy", "Annie", "Denis", "Lee", "Michael", "Mike", "adam", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "edward2", "grandma", "grandpa", "ian", "iven3",
    "iven4", "klatt", "klatt2", "klatt3", "linda", "max", "norbert", "quincy", "rob",
    "robert", "shelby", "steph", "travis", "victor", "whisper", "zac",
)
PITCH_RANGE = (25, 75)    # espeakPITCH, 0..100, 50 = the voice's own base pitch
RATE_RANGE = (130, 200)   # words per minute (espeak's default is 175)
RATE_JITTER = 0.06        # per clip: +-6 % rate, so repeats of a word differ slightly
PITCH_JITTER = 4          # per clip: +-4 pitch units
MAX_RATE = 450            # espeak's maximum speaking rate
GAIN_DB = (-12.0, 0.0)    # peak level of the word in the clip, dBFS
PEAK_LIMIT = 0.98         # the mixed clip is scaled down if it would exceed this: no clipping
MAX_SPEECH_S = 0.95       # longer words are re-spoken faster (then cut as a last resort)
TRIM_DB = 40.0            # speech = 5 ms frames within 40 dB of the loudest frame
NOISE_KINDS: tuple[str, ...] = ("white_noise", "pink_noise", "brown_noise", "running_tap", "hum")

_WORD_RE = re.compile(r"^[a-z]+$")


def _rng(seed: int, *parts: int | str) -> np.random.Generator:
    """Independent random stream named by (seed, *parts): strings are hashed, so the stream
    never depends on process order or on how many other streams were drawn before."""
    key = [seed % 2**64] + [p if isinstance(p, int) else _str_key(p) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(key))


def _str_key(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


# ----------------------------------------------------------------------------------------
# espeak-ng through ctypes

ESPEAK_RATE = 22_050              # espeak-ng's native output rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2     # espeak_AUDIO_OUTPUT: synth in the calling thread, no audio device
_ESPEAK_RATE_PARAM, _ESPEAK_VOLUME_PARAM, _ESPEAK_PITCH_PARAM = 1, 2, 3   # espeak_PARAMETER
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_VOLUME = 50               # half of espeak's default 100: some variants clip at 100

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)
_chunks: list[np.ndarray] = []    # int16 blocks delivered by espeak during one espeak_Synth


def _collect(wav: Any, numsamples: int, events: Any) -> int:
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0  # 0 = keep synthesising


_collect_cb = _SYNTH_CALLBACK(_collect)  # module-level: must outlive every espeak instance


@lru_cache(maxsize=1)
def espeak_paths() -> tuple[str, str]:
    """(libespeak-ng path, espeak-ng-data path) from the espeakng_loader wheel."""
    try:
        import espeakng_loader
        lib, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (ImportError, RuntimeError) as e:
        raise RuntimeError(f"espeak-ng is unavailable ({e}); install it with "
                           "`pip install 'espeakng-loader>=0.2'`") from e
    if not Path(lib).is_file():
        raise RuntimeError(f"libespeak-ng not found at {lib}; reinstall it with "
                           "`pip install --force-reinstall 'espeakng-loader>=0.2'`")
    return lib, data


def _open_espeak(lib_path: str, data_path: str) -> ctypes.CDLL:
    """dlopen + espeak_Initialize. With no other handle on the library, this is a pristine
    instance: all C statics are fresh."""
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as e:
        raise RuntimeError(f"cannot load libespeak-ng from {lib_path} ({e}); reinstall it with "
                           "`pip install --force-reinstall 'espeakng-loader>=0.2'`") from e
    c_int, c_uint, c_char_p, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p
    lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
    lib.espeak_Initialize.restype = c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [c_char_p]
    lib.espeak_SetVoiceByName.restype = c_int
    lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
    lib.espeak_SetParameter.restype = c_int
    lib.espeak_Synth.argtypes = [c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint,
                                 c_void_p, c_void_p]
    lib.espeak_Synth.restype = c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if rate != ESPEAK_RATE:
        _close_espeak(lib, terminate=rate > 0)
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data at {data_path}; "
                           "reinstall `pip install --force-reinstall 'espeakng-loader>=0.2'`")
    lib.espeak_SetSynthCallback(_collect_cb)
    return lib


def _close_espeak(lib: ctypes.CDLL, terminate: bool = True) -> None:
    if terminate:
        lib.espeak_Terminate()
    import _ctypes  # dlclose drops our handle; at refcount 0 the library (and its statics) go away
    _ctypes.dlclose(lib._handle)


def make_voice_dir(root: Path) -> str:
    """A private espeak-ng-data under `root`: symlinks to the wheel's data, plus
    voices/<name> aliases for VOICES. Why: espeak_SetVoiceByName("en-us+m3") skips
    espeak_ListVoices (parsing every voice file, ~4 ms, paid on every utterance since each
    gets a fresh library instance) only if <data>/voices/en-us exists, and the wheel keeps
    its voices under lang/gmw/ with mixed-case names (en-US) that the lookup cannot find."""
    src = Path(espeak_paths()[1])
    data = root / "espeak-ng-data"
    data.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "voices":
            (data / entry.name).symlink_to(entry)
    (data / "voices").mkdir()
    (data / "voices" / "!v").symlink_to(src / "voices" / "!v")  # the variants
    voice_files = {p.name.lower(): p for p in (src / "lang").rglob("*") if p.is_file()}
    for voice in VOICES:
        if voice not in voice_files:
            raise RuntimeError(f"espeak-ng voice {voice!r} is missing from {src}/lang; reinstall "
                               "`pip install --force-reinstall 'espeakng-loader>=0.2'`")
        (data / "voices" / voice).symlink_to(voice_files[voice])
    return str(data)


def espeak_synthesize(text: str, voice: str, variant: str, rate: int, pitch: int,
                      data_path: str | None = None) -> np.ndarray:
    """Speak `text` with a fresh espeak instance; int16 samples at ESPEAK_RATE. `data_path`
    defaults to the wheel's espeak-ng-data: slower than a make_voice_dir one, and for a few
    breathy variants (e.g. caleb) not bit-identical to it."""
    lib_path, default_data = espeak_paths()
    data_path = data_path or default_data
    lib = _open_espeak(lib_path, data_path)
    try:
        name = f"{voice}+{variant}" if variant else voice
        if lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise RuntimeError(f"espeak-ng voice {name!r} not found in {data_path}; use one of "
                               f"{VOICES} or reinstall espeakng-loader")
        for param, value in ((_ESPEAK_RATE_PARAM, rate), (_ESPEAK_PITCH_PARAM, pitch),
                             (_ESPEAK_VOLUME_PARAM, _ESPEAK_VOLUME)):
            lib.espeak_SetParameter(param, int(value), 0)
        _chunks.clear()
        data = text.encode()
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8,
                               None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"espeak_Synth({text!r}, voice {name!r}) failed with code {err}")
        return np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
    finally:
        _chunks.clear()
        _close_espeak(lib)


def check_voices(data_path: str, voices: Sequence[str], variants: Sequence[str]) -> None:
    """Fail early, with a readable error, if the library or any voice/variant is missing."""
    lib = _open_espeak(espeak_paths()[0], data_path)
    try:
        for voice in sorted(set(voices)):
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng voice {voice!r} is missing from {data_path}; "
                                   "reinstall `pip install --force-reinstall 'espeakng-loader>=0.2'`")
    finally:
        _close_espeak(lib)
    # espeak silently ignores an unknown "+variant", so look for the file itself.
    for variant in sorted(set(variants)):
        if not (Path(data_path) / "voices" / "!v" / variant).is_file():
            raise RuntimeError(f"espeak-ng voice variant {variant!r} is missing from "
                               f"{data_path}/voices/!v; reinstall espeakng-loader")


_fresh_state_checked = False


def _check_fresh_state(data_path: str | None = None) -> None:
    """Once per process: the same utterance must come out identical after a different one.
    This fails only if something else in the process holds libespeak-ng open, so that
    dlclose cannot reset it."""
    global _fresh_state_checked
    if _fresh_state_checked:
        return
    a = espeak_synthesize("yes", "en-us", "m3", 175, 50, data_path)
    espeak_synthesize("sheila", "en-gb-x-rp", "f2", 150, 40, data_path)
    b = espeak_synthesize("yes", "en-us", "m3", 175, 50, data_path)
    if not np.array_equal(a, b):
        raise RuntimeError("libespeak-ng keeps state between utterances in this process (is it "
                           "loaded by another module too?); synthesis would not be deterministic. "
                           "Run synthesize_corpus with workers>=2 so it runs in fresh processes.")
    _fresh_state_checked = True


# ----------------------------------------------------------------------------------------
# Speakers and splits

@dataclass(frozen=True)
class Speaker:
    index: int
    id: str         # 8 hex digits, as in Speech Commands file names
    voice: str      # espeak voice (accent)
    variant: str    # espeak variant (timbre)
    pitch: int      # base espeakPITCH
    rate: int       # base words per minute


def make_speakers(seed: int, n: int) -> list[Speaker]:
    """Speaker i depends only on (seed, i). Voice x variant combinations are dealt from one
    seeded permutation, so the first len(VOICES)*len(VARIANTS) speakers all differ in timbre
    or accent; pitch and rate are drawn per speaker."""
    combos = [(v, var) for v in VOICES for var in VARIANTS]
    order = _rng(seed, "combos").permutation(len(combos))
    speakers: list[Speaker] = []
    taken: set[str] = set()
    for i in range(n):
        voice, variant = combos[order[i % len(combos)]]
        rng = _rng(seed, "speaker", i)
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
        salt = 0
        while (sid := hashlib.sha256(f"{seed}:{i}:{salt}".encode()).hexdigest()[:8]) in taken:
            salt += 1  # practically never; keeps ids unique without depending on later speakers
        taken.add(sid)
        speakers.append(Speaker(i, sid, voice, variant, pitch, rate))
    return speakers


def assign_splits(speakers: Sequence[Speaker], val_fraction: float,
                  test_fraction: float) -> dict[str, str]:
    """speaker id -> split. Whole speakers go to one split; ordering by the (hash-like) id
    makes the choice random but reproducible. A split with a non-zero fraction always gets at
    least one speaker, so tiny corpora still have a validation and a test set."""
    n = len(speakers)
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} speakers cannot fill train + {n_val} validation + {n_test} test "
                         f"speakers; use at least {n_val + n_test + 1} speakers")
    ids = sorted(s.id for s in speakers)
    split = {sid: "validation" for sid in ids[:n_val]}
    split.update({sid: "testing" for sid in ids[n_val:n_val + n_test]})
    split.update({sid: "train" for sid in ids[n_val + n_test:]})
    return split


# ----------------------------------------------------------------------------------------
# Background noise (the _background_noise_ folder; also mixed into every clip)

def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of one kind of noise at SAMPLE_RATE, RMS 0.1 (-20 dBFS), float64."""
    t = np.arange(n) / SAMPLE_RATE
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)  # floor at 20 Hz: no DC drift

    def shaped(gain: np.ndarray) -> np.ndarray:  # white noise coloured in the frequency domain
        return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * gain, n)

    if kind == "white_noise":
        x = rng.standard_normal(n)
    elif kind == "pink_noise":
        x = shaped(1 / np.sqrt(f))
    elif kind == "brown_noise":
        x = shaped(1 / f)
    elif kind == "running_tap":  # hiss centred near 1.5 kHz with a slow, irregular swell
        x = shaped(np.exp(-0.5 * (np.log(f / 1500.0) / 0.6) ** 2))
        wobble = shaped(np.exp(-f / 3.0))  # a few-Hz random modulation
        x *= 1 + 0.25 * wobble / (np.abs(wobble).max() + 1e-12)
        x *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "hum":  # mains hum: harmonics of 50 or 60 Hz over a faint pink floor
        f0 = float(rng.choice([50.0, 60.0])) * (1 + 0.002 * np.sin(2 * np.pi * 0.1 * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 9))
        pink = shaped(1 / np.sqrt(f))
        x = x / np.std(x) + 0.1 * pink / np.std(pink)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    x = x * (0.1 / (np.sqrt(np.mean(x ** 2)) + 1e-12))
    return np.clip(x, -PEAK_LIMIT, PEAK_LIMIT)


def _write_pcm16(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_background_noise(out: Path, seed: int, seconds: float) -> list[str]:
    folder = out / BACKGROUND_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SAMPLE_RATE))
    names = []
    for kind in NOISE_KINDS:
        _write_pcm16(folder / f"{kind}.wav", make_noise(kind, n, _rng(seed, "noise", kind)))
        names.append(f"{kind}.wav")
    return names


# ----------------------------------------------------------------------------------------
# One clip

def _resample(x: np.ndarray) -> np.ndarray:
    import torch  # lazy: importing torch costs seconds, and only the renderers need it
    import torchaudio.functional as AF
    return AF.resample(torch.from_numpy(x.astype(np.float32)), ESPEAK_RATE,
                       SAMPLE_RATE).numpy().astype(np.float64)


def speech_bounds(x: np.ndarray, frame: int = 80) -> tuple[int, int]:
    """[start, end) of the part of x within TRIM_DB of its loudest 5 ms frame."""
    n = len(x) // frame
    if n == 0:
        return 0, 0
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    if rms.max() <= 0 or active.size == 0:
        return 0, 0
    return int(active[0] * frame), int(min(len(x), (active[-1] + 1) * frame))


def speak_word(word: str, voice: str, variant: str, rate: int, pitch: int,
               data_path: str | None = None) -> tuple[np.ndarray, int]:
    """The trimmed spoken word at SAMPLE_RATE (float64), and the speaking rate used."""
    max_len = int(MAX_SPEECH_S * SAMPLE_RATE)
    for _ in range(4):
        x = _resample(espeak_synthesize(word, voice, variant, rate, pitch, data_path) / 32768.0)
        start, end = speech_bounds(x)
        if end <= start:
            raise RuntimeError(f"espeak-ng produced silence for {word!r} ({voice}+{variant})")
        speech = x[start:end]
        if len(speech) <= max_len or rate >= MAX_RATE:
            break
        rate = min(MAX_RATE, math.ceil(rate * len(speech) / max_len * 1.05))  # speak faster
    if len(speech) > max_len:  # last resort: cut, fading out over 10 ms to avoid a click
        speech = speech[:max_len].copy()
        speech[-160:] *= np.linspace(1.0, 0.0, 160)
    return speech, rate


def render_clip(seed: int, spk: Speaker, word: str, k: int, noises: Sequence[tuple[str, np.ndarray]],
                snr_db: tuple[float, float], data_path: str | None = None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """1 s of `word` said by `spk` (take k) over background noise, as float64 in [-1, 1]."""
    rng = _rng(seed, "clip", spk.index, word, k)
    rate = int(round(spk.rate * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)))
    pitch = int(np.clip(spk.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
    speech, rate = speak_word(word, spk.voice, spk.variant, rate, pitch, data_path)

    n = len(speech)
    offset = int(rng.integers(0, CLIP_SAMPLES - n + 1))  # anywhere the word fits
    gain_db = float(rng.uniform(*GAIN_DB))
    speech = speech * (10 ** (gain_db / 20) / np.abs(speech).max())

    noise_name, noise = noises[int(rng.integers(len(noises)))]
    pos = int(rng.integers(0, len(noise) - CLIP_SAMPLES + 1))
    snr = float(rng.uniform(*snr_db))
    bg = noise[pos:pos + CLIP_SAMPLES]
    # SNR = power of the speech while it is spoken vs. power of the noise over the clip
    p_speech, p_noise = np.mean(speech ** 2), np.mean(bg ** 2)
    bg = bg * math.sqrt(p_speech / (max(p_noise, 1e-20) * 10 ** (snr / 10)))

    clip = bg.copy()
    clip[offset:offset + n] += speech
    peak = np.abs(clip).max()
    if peak > PEAK_LIMIT:  # scale speech and noise together: SNR kept, no clipping
        clip *= PEAK_LIMIT / peak
        gain_db += 20 * math.log10(PEAK_LIMIT / peak)
    info = dict(voice=spk.voice, variant=spk.variant, pitch=pitch, rate=rate,
                speech_start_ms=round(offset * 1000 / SAMPLE_RATE, 4),
                speech_end_ms=round((offset + n) * 1000 / SAMPLE_RATE, 4),
                gain_db=round(gain_db, 2), snr_db=round(snr, 2), noise_file=noise_name)
    return clip, info


# ----------------------------------------------------------------------------------------
# Worker processes: one task = one speaker (all of their words and takes)

_worker: dict[str, Any] = {}


def _worker_init(out: str, seed: int, words: tuple[str, ...], repeats: int,
                 snr_db: tuple[float, float], noise_names: tuple[str, ...], data_path: str) -> None:
    # An exception escaping a Pool initializer makes multiprocessing respawn the worker
    # forever (a hang), so keep it and re-raise it from the first task instead.
    try:
        import torch
        torch.set_num_threads(1)  # one process per core; also keeps resampling bit-reproducible
        noises = []
        for name in noise_names:  # read back the written files: mixing uses exactly their samples
            x, _ = sf.read(str(Path(out) / BACKGROUND_DIR / name), dtype="float64")
            noises.append((name, x))
        _worker.update(out=Path(out), seed=seed, words=words, repeats=repeats, snr_db=snr_db,
                       noises=noises, data_path=data_path)
        _check_fresh_state(data_path)
    except Exception as e:
        _worker["error"] = e


def _speaker_task(spk: Speaker) -> list[dict[str, Any]]:
    w = _worker
    if "error" in w:
        raise w["error"]
    rows = []
    for word in w["words"]:
        for k in range(w["repeats"]):
            clip, info = render_clip(w["seed"], spk, word, k, w["noises"], w["snr_db"],
                                     w["data_path"])
            rel = f"{word}/{spk.id}_nohash_{k}.wav"
            _write_pcm16(w["out"] / rel, clip)
            rows.append(dict(path=rel, word=word, speaker=spk.id, **info))
    return rows


# ----------------------------------------------------------------------------------------
# Driver

def _check_words(unknown_words: Sequence[str]) -> tuple[str, ...]:
    unknown = tuple(unknown_words)
    words = KEYWORDS + unknown
    bad = [w for w in unknown if not isinstance(w, str) or not _WORD_RE.match(w)]
    if bad:
        raise ValueError(f"unknown_words must be lowercase a-z words, got {bad}")
    if len(set(words)) != len(words):
        raise ValueError(f"unknown_words repeat a word or overlap KEYWORDS: {unknown}")
    return words


def _remove_generated(out: Path, words: Sequence[str]) -> None:
    for name in (*words, BACKGROUND_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (SYNTH_JSON, MANIFEST, VALIDATION_LIST, TESTING_LIST, IN_PROGRESS):
        (out / name).unlink(missing_ok=True)


def _prepare_out(out: Path, words: tuple[str, ...], overwrite: bool) -> None:
    """Only ever deletes what this module wrote: a complete corpus (synth.json) when
    overwrite=True, or a half-written one (IN_PROGRESS marker). Any other non-empty
    directory (say, the real Speech Commands) is refused."""
    meta, marker = out / SYNTH_JSON, out / IN_PROGRESS
    if meta.exists():
        if not overwrite:
            raise FileExistsError(f"{meta} exists: {out} already holds a synthetic corpus; pass "
                                  "overwrite=True to regenerate it, or choose another directory")
        try:
            old_words = json.loads(meta.read_text())["words"]
        except (ValueError, KeyError, TypeError):
            old_words = []
        _remove_generated(out, [*old_words, *words])
    elif marker.exists():  # an earlier run died half-way: its files are ours to replace
        try:
            old_words = json.loads(marker.read_text())["words"]
        except (ValueError, KeyError, TypeError):
            old_words = []
        _remove_generated(out, [*old_words, *words])
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no {SYNTH_JSON}: refusing to write a "
                              "synthetic corpus into it; choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"words": list(words)}))


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _render_speakers(spk_list: Sequence[Speaker], workers: int, init_args: tuple,
                     collect: Callable[[int, list[dict[str, Any]]], None]) -> None:
    if workers == 1:  # in-process: easier to debug; torch threads restored afterwards
        import torch
        threads = torch.get_num_threads()
        try:
            _worker_init(*init_args)
            for i, spk in enumerate(spk_list, 1):
                collect(i, _speaker_task(spk))
        finally:
            torch.set_num_threads(threads)
            _worker.clear()
    else:  # spawn: fresh interpreters, no inherited threads or espeak state
        with mp.get_context("spawn").Pool(workers, _worker_init, init_args) as pool:
            for i, speaker_rows in enumerate(pool.imap_unordered(_speaker_task, spk_list), 1):
                collect(i, speaker_rows)


def synthesize_corpus(out: str | Path, *, seed: int = 0, speakers: int = 40, repeats: int = 1,
                      unknown_words: Sequence[str] = UNKNOWN_WORDS, val_fraction: float = 0.1,
                      test_fraction: float = 0.1, noise_seconds: float = 30.0,
                      snr_db: tuple[float, float] = (5.0, 30.0), workers: int | None = None,
                      progress: bool = True, overwrite: bool = False) -> dict:
    """Write a Speech-Commands-layout corpus to `out` and return the content of synth.json.

    Every speaker says every word (KEYWORDS + unknown_words) `repeats` times. The output is
    byte-identical for the same arguments whatever `workers` is (None = os.cpu_count()).
    Raises FileExistsError if `out` already holds a corpus (unless overwrite=True) or is a
    non-empty directory that is not one of ours; RuntimeError if espeak-ng is unusable.
    """
    t0 = time.perf_counter()
    out = Path(out)
    words = _check_words(unknown_words)
    if speakers < 1 or repeats < 1:
        raise ValueError(f"speakers and repeats must be >= 1, got {speakers}, {repeats}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    if noise_seconds * SAMPLE_RATE < CLIP_SAMPLES:
        raise ValueError(f"noise_seconds must be >= 1, got {noise_seconds}")
    snr_db = (float(snr_db[0]), float(snr_db[1]))
    if snr_db[0] > snr_db[1]:
        raise ValueError(f"snr_db must be (low, high), got {snr_db}")

    spk_list = make_speakers(seed, speakers)
    split_of = assign_splits(spk_list, val_fraction, test_fraction)  # ValueError if too few
    workers = max(1, min(workers or os.cpu_count() or 1, len(spk_list)))
    rows: list[dict[str, Any]] = []
    step = max(1, len(spk_list) // 10)

    def collect(done: int, speaker_rows: list[dict[str, Any]]) -> None:
        rows.extend(speaker_rows)
        if progress and (done % step == 0 or done == len(spk_list)):
            print(f"[synth] {done}/{len(spk_list)} speakers, {len(rows)} clips, "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    voice_root = Path(tempfile.mkdtemp(prefix="synth-espeak-"))
    try:
        data_path = make_voice_dir(voice_root)
        check_voices(data_path, [s.voice for s in spk_list], [s.variant for s in spk_list])
        _prepare_out(out, words, overwrite)  # only now touch `out`: all checks have passed
        noise_names = tuple(write_background_noise(out, seed, noise_seconds))
        for word in words:
            (out / word).mkdir(exist_ok=True)
        init_args = (str(out), seed, words, repeats, snr_db, noise_names, data_path)
        _render_speakers(spk_list, workers, init_args, collect)
    finally:
        shutil.rmtree(voice_root, ignore_errors=True)

    rows.sort(key=lambda r: r["path"])
    for r in rows:
        r["split"] = split_of[r["speaker"]]
    _write_lines(out / VALIDATION_LIST, [r["path"] for r in rows if r["split"] == "validation"])
    _write_lines(out / TESTING_LIST, [r["path"] for r in rows if r["split"] == "testing"])
    with open(out / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    per_word = {w: {s: 0 for s in SPLITS} for w in words}
    for r in rows:
        per_word[r["word"]][r["split"]] += 1
    speakers_per_split = {s: sum(v == s for v in split_of.values()) for s in SPLITS}
    elapsed = time.perf_counter() - t0
    meta = {
        "format": "speech_commands_synth/1",
        "seed": seed,
        "params": dict(speakers=speakers, repeats=repeats, val_fraction=val_fraction,
                       test_fraction=test_fraction, noise_seconds=noise_seconds,
                       snr_db=list(snr_db), gain_db=list(GAIN_DB), pitch_range=list(PITCH_RANGE),
                       rate_range=list(RATE_RANGE), max_speech_s=MAX_SPEECH_S),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "keywords": list(KEYWORDS),
        "unknown_words": list(words[len(KEYWORDS):]),
        "words": list(words),
        "noise_files": [f"{BACKGROUND_DIR}/{n}" for n in noise_names],
        "clips": len(rows),
        "clips_per_split": {s: sum(c[s] for c in per_word.values()) for s in SPLITS},
        "clips_per_word": per_word,
        "speakers_per_split": speakers_per_split,
        "speakers": [dict(asdict(s), split=split_of[s.id]) for s in spk_list],
        "workers": workers,
        "elapsed_s": round(elapsed, 2),
    }
    tmp = out / f"{SYNTH_JSON}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / SYNTH_JSON)  # atomic: synth.json exists only for a complete corpus
    (out / IN_PROGRESS).unlink(missing_ok=True)
    if progress:
        sps = speakers_per_split
        print(f"[synth] done: {len(rows)} clips ({len(words)} words x {speakers} speakers x "
              f"{repeats}), speakers train/val/test = {sps['train']}/{sps['validation']}/"
              f"{sps['testing']}, {elapsed:.1f}s ({len(rows) / elapsed:.0f} clips/s) -> {out}",
              file=sys.stderr, flush=True)
    return meta
