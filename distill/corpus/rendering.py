"""From a spoken word to a 1 s clip over background noise, and the worker processes that render
a corpus speaker by speaker.

- Pauses: espeak's inter-word gap (espeakWORDGAP) only acts between words, so for one word
  the pause model is the silence around it: a leading and a trailing pause, each drawn from
  `pause_ms`. Only `loudest` placement records them.
- Placement of the word in the 1 s clip (`placement`):
    uniform  anywhere it fits;
    center   centred, +- a uniform jitter of `center_jitter_ms` (clamped so that it fits);
    loudest  a recording of leading pause + word + trailing pause over noise (at least 1 s),
             cut to its 1 s window of highest energy, as Speech Commands' extraction did.
             Among the windows that hold the whole word the noise decides, so the word lands
             anywhere it fits, and an edge may cut a faint onset or tail (~8 % of clips,
             median 6 ms): speech_cut_ms.
  speech_start_ms / speech_end_ms in the manifest are the word's position inside the clip
  (clamped to [0, 1000]); speech_cut_ms is how much of the word the clip edges cut off.

Workers: one task is one speaker (all of their words and takes), in spawned processes (fresh
interpreters: no inherited threads or espeak state) or, with one worker, in this process. A
clip's random draws come from streams named by (seed, speaker, word, take) (distill.corpus.streams),
so the files are the same whatever the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf

from distill.corpus.espeak import check_fresh_state
from distill.corpus.layout import CLIP_SAMPLES, SAMPLE_RATE
from distill.corpus.options import RenderOptions
from distill.corpus.sound import PEAK_LIMIT, loudest_window, noise_segment, write_pcm16
from distill.corpus.speakers import Speaker, clip_path, speaker_words
from distill.corpus.speaking import Spoken, speak_takes, speak_word, take_params
from distill.corpus.voices import PITCHED_ENGINES
from distill.names import NOISE_DIR

GAIN_DB = (-12.0, 0.0)    # peak level of the word in the clip, dBFS


def _place(rng: np.random.Generator, opts: RenderOptions, n: int) -> tuple[int, int]:
    """(length of the recording, where the n-sample word starts in it), by opts.placement."""
    if opts.placement == "loudest":  # pause, word, pause: the person speaking after "record"
        lead, trail = (int(round(float(rng.uniform(*opts.pause_ms)) * SAMPLE_RATE / 1000))
                       for _ in range(2))
        return max(CLIP_SAMPLES, lead + n + trail), lead
    if opts.placement == "center":
        jitter_ms = float(rng.uniform(-opts.center_jitter_ms, opts.center_jitter_ms))
        jitter = jitter_ms * SAMPLE_RATE / 1000
        return CLIP_SAMPLES, int(np.clip(round((CLIP_SAMPLES - n) / 2 + jitter), 0, CLIP_SAMPLES - n))
    return CLIP_SAMPLES, int(rng.integers(0, CLIP_SAMPLES - n + 1))  # uniform: anywhere the word fits


def render_recording(seed: int, spk: Speaker, word: str, k: int,
                     noises: Sequence[tuple[str, np.ndarray]], opts: RenderOptions,
                     data_path: str | None = None, spoken: Spoken | None = None
                     ) -> tuple[np.ndarray, int, int, dict[str, Any]]:
    """`word` said by `spk` (take k) over background noise, as float64: the recording (the
    clip itself for uniform / center, longer for loudest), the word's [start, end) sample in
    it, and the manifest facts known so far. A festival / pico / hibari speaker's speech comes
    from `spoken` (speak_takes)."""
    rng, take = take_params(seed, spk, word, k)
    if spk.engine == "espeak":
        speech, rate = speak_word(word, spk.voice, spk.variant, take["rate"], take["pitch"], spk.vtl, data_path,
                                  noise_seed=take["noise_seed"])
        engine_info = dict(rate=rate, pitch=take["pitch"], tempo="")
    else:
        if spoken is None or (word, k) not in spoken:
            raise ValueError(f"render_recording: {spk.engine} speech of {word!r} take {k} must come from speak_takes")
        speech, tempo = spoken[(word, k)]
        engine_info = dict(rate="", pitch=spk.pitch if spk.engine in PITCHED_ENGINES else "", tempo=tempo)
    n = len(speech)
    gain_db = float(rng.uniform(*GAIN_DB))
    speech = speech * (10 ** (gain_db / 20) / np.abs(speech).max())
    length, at = _place(rng, opts, n)

    noise_name, noise = noises[int(rng.integers(len(noises)))]
    bg = noise_segment(noise, length, rng)
    snr = float(rng.uniform(*opts.snr_db))
    # SNR = power of the speech while it is spoken vs. power of the noise over the recording
    p_speech, p_noise = np.mean(speech ** 2), np.mean(bg ** 2)
    recording = bg * math.sqrt(p_speech / (max(p_noise, 1e-20) * 10 ** (snr / 10)))
    recording[at:at + n] += speech
    info = dict(engine=spk.engine, voice=spk.voice, variant=spk.variant, **engine_info, vtl_factor=spk.vtl,
                gain_db=gain_db, snr_db=round(snr, 2), noise_file=noise_name)
    return recording, at, at + n, info


def render_clip(seed: int, spk: Speaker, word: str, k: int, noises: Sequence[tuple[str, np.ndarray]],
                opts: RenderOptions, data_path: str | None = None, spoken: Spoken | None = None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """1 s of `word` said by `spk` (take k) over background noise, as float64 in [-1, 1], and
    its manifest facts (the word's position inside the clip, what the clip edges cut off)."""
    recording, a, b, info = render_recording(seed, spk, word, k, noises, opts, data_path, spoken)
    start = loudest_window(recording) if opts.placement == "loudest" else 0
    clip = recording[start:start + CLIP_SAMPLES].copy()
    peak = np.abs(clip).max()
    if peak > PEAK_LIMIT:  # scale speech and noise together: SNR kept, no clipping
        clip *= PEAK_LIMIT / peak
        info["gain_db"] += 20 * math.log10(PEAK_LIMIT / peak)
    a_in, b_in = (int(np.clip(x - start, 0, CLIP_SAMPLES)) for x in (a, b))

    def ms(samples: int) -> float:
        return round(samples * 1000 / SAMPLE_RATE, 4)

    info.update(gain_db=round(info["gain_db"], 2), speech_start_ms=ms(a_in), speech_end_ms=ms(b_in),
                speech_cut_ms=ms((b - a) - (b_in - a_in)))
    return clip, info


# ----------------------------------------------------------------------------------------
# Worker processes: one task = one speaker (all of their words and takes)

_worker: dict[str, Any] = {}


def _worker_init(out: str, seed: int, words: tuple[str, ...], repeats: int, opts: RenderOptions,
                 noise_names: tuple[str, ...], data_path: str) -> None:
    # An exception escaping a Pool initializer makes multiprocessing respawn the worker
    # forever (a hang), so keep it and re-raise it from the first task instead.
    try:
        import torch
        torch.set_num_threads(1)  # one process per core; also keeps resampling bit-reproducible
        noises = []
        for name in noise_names:  # read back the written files: mixing uses exactly their samples
            x, _ = sf.read(str(Path(out) / NOISE_DIR / name), dtype="float64")
            noises.append((name, x))
        _worker.update(out=Path(out), seed=seed, words=words, repeats=repeats, opts=opts,
                       noises=noises, data_path=data_path)
        check_fresh_state(data_path)
    except Exception as e:
        _worker["error"] = e


def _speaker_task(spk: Speaker) -> list[dict[str, Any]]:
    w = _worker
    if "error" in w:
        raise w["error"]
    takes = [(word, k) for word in speaker_words(spk, w["words"]) for k in range(w["repeats"])]
    spoken = speak_takes(w["seed"], spk, takes) if spk.engine != "espeak" else None
    rows = []
    for word, k in takes:
        clip, info = render_clip(w["seed"], spk, word, k, w["noises"], w["opts"], w["data_path"], spoken)
        rel = clip_path(spk, word, k)
        write_pcm16(w["out"] / rel, clip)
        rows.append(dict(path=rel, word=word, speaker=spk.id, split=spk.split, part=spk.part,
                         unseen_voice=int(spk.unseen_voice), **info))
    return rows


def render_speakers(spk_list: Sequence[Speaker], workers: int, init_args: tuple,
                    collect: Callable[[int, list[dict[str, Any]]], None]) -> None:
    """Every speaker's clips written; collect(speakers done, that speaker's manifest rows) after
    each, in the order they finish. init_args: those of _worker_init."""
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
