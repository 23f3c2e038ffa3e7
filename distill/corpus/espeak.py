"""espeak-ng through ctypes: the shared library and voice data of the `espeakng_loader` wheel.

Why a fresh library instance per utterance: espeak-ng keeps DSP state in C statics
(pitch-flutter phase, AGC, filter memories) from one utterance to the next, so two syntheses
of the same word in one process differ. espeak_synthesize therefore dlopens the library,
speaks, and dlcloses it, which resets all of that state; check_fresh_state verifies once per
process that this really works. A fresh instance would re-scan all ~245 voice files on every
utterance unless the voice can be opened directly by name: make_voice_dir provides that
(about 8x faster synthesis). The breath noise of breathy variants also draws on libc rand(),
which no dlclose resets: espeak_synthesize seeds it (and espeak's own generator) every time.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ESPEAK_RATE = 22_050              # espeak-ng's native output rate
MIN_RATE, MAX_RATE = 80, 450      # espeak clamps espeakRATE (words per minute) to this range
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
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = c_int
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


def make_voice_dir(root: Path, voices: Sequence[str]) -> str:
    """A private espeak-ng-data under `root`: symlinks to the wheel's data, plus
    voices/<name> aliases for `voices`. Why: espeak_SetVoiceByName("en-us+m3") skips
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
    for voice in voices:
        if voice not in voice_files:
            raise RuntimeError(f"espeak-ng voice {voice!r} is missing from {src}/lang; reinstall "
                               "`pip install --force-reinstall 'espeakng-loader>=0.2'`")
        (data / "voices" / voice).symlink_to(voice_files[voice])
    return str(data)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.srand.argtypes, libc.srand.restype = [ctypes.c_uint], None
    return libc


def espeak_synthesize(text: str, voice: str, variant: str, rate: int, pitch: int,
                      data_path: str | None = None, noise_seed: int = 0) -> np.ndarray:
    """Speak `text` with a fresh espeak instance; int16 samples at ESPEAK_RATE. `data_path`
    defaults to the wheel's espeak-ng-data (slower than a make_voice_dir one). `noise_seed`
    seeds the breath noise of breathy variants (e.g. f2, caleb)."""
    lib_path, default_data = espeak_paths()
    data_path = data_path or default_data
    lib = _open_espeak(lib_path, data_path)
    try:
        name = f"{voice}+{variant}" if variant else voice
        if lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise RuntimeError(f"espeak-ng voice {name!r} not found in {data_path}; "
                               "reinstall espeakng-loader")
        for param, value in ((_ESPEAK_RATE_PARAM, rate), (_ESPEAK_PITCH_PARAM, pitch),
                             (_ESPEAK_VOLUME_PARAM, _ESPEAK_VOLUME)):
            lib.espeak_SetParameter(param, int(value), 0)
        # Breath noise comes from espeak's own generator and from libc rand(), whose state
        # outlives the library instance: seed both, or a clip depends on what came before it.
        lib.espeak_ng_SetRandSeed(noise_seed)
        _libc().srand(noise_seed % 2**32)
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


def check_fresh_state(data_path: str | None = None) -> None:
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
