"""synthesize_corpus: a Speech-Commands-layout corpus (distill.corpus.layout) written to a folder.

The steps, in order: check every option and deal the speakers (nothing is written before
both pass); check that every engine and voice can speak; claim the output folder (only ever
replacing a corpus this module wrote); write the background noise, then every clip (in worker
processes, distill.corpus.rendering); then the split lists, the unseen-engine parts' _silence_
clips and the manifest; and synth.json LAST, so that its presence means the corpus is complete.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf

from distill.corpus.layout import (CLIP_SAMPLES, IN_PROGRESS, MANIFEST, MANIFEST_COLUMNS, SAMPLE_RATE, SILENCE_LABEL,
                                   SPLITS, SYNTH_JSON, TESTING_LIST, TESTING_UNSEEN_LIST, UNSEEN_ENGINE_DIRS,
                                   VALIDATION_LIST, VALIDATION_UNSEEN_LIST)
from distill.corpus.options import (ENGINE_WEIGHTS, CorpusOptions, HeldoutVoices, RenderOptions, check_engines,
                                    check_options)
from distill.corpus.rendering import GAIN_DB, render_speakers
from distill.corpus.sound import noise_segment, write_background_noise, write_pcm16
from distill.corpus.speakers import UNSEEN_SHARE, Speaker, clip_path, make_speakers, speaker_words
from distill.corpus.speaking import MAX_SPEECH_S, prepare_voices
from distill.corpus.streams import rng_for
from distill.corpus.summary import (clips_per_word, split_summaries, summary_line, timing_stats,
                                    timing_stats_per_engine, unseen_engine_summary)
from distill.corpus.voices import (EXCLUDED_VOICES, PICO_PITCH_RANGE, PITCH_RANGE, TEMPO_RANGE, heldout_voices,
                                   parse_heldout)
from distill.names import KEYWORDS, NOISE_DIR

Rows = list[dict[str, Any]]  # manifest rows, one per clip


@dataclass(frozen=True)
class CorpusPlan:
    """What synthesize_corpus has decided, and checked, before it writes anything."""
    out: Path
    options: CorpusOptions
    words: tuple[str, ...]       # KEYWORDS + unknown_words
    render: RenderOptions
    speakers: list[Speaker]
    workers: int


def synthesize_corpus(out: str | Path, options: CorpusOptions | None = None, *, workers: int | None = None,
                      progress: bool = True, overwrite: bool = False) -> dict:
    """Write a Speech-Commands-layout corpus to `out` and return the content of synth.json.

    options: what the corpus holds (CorpusOptions documents each option; None: the defaults).
    The output is byte-identical for the same options whatever `workers` is (None =
    os.cpu_count()). progress: print progress and a summary line to stderr.

    Raises ValueError for a bad option (naming it), FileExistsError if `out` already holds a
    corpus (unless overwrite=True) or is a non-empty directory that is not one of ours,
    RuntimeError if espeak-ng is unusable.
    """
    t0 = time.perf_counter()
    plan = plan_corpus(Path(out), options or CorpusOptions(), workers)
    rows: Rows = []
    noise_names = _write_clips(plan, overwrite, _collector(rows, len(plan.speakers), t0, progress))
    rows.sort(key=lambda r: r["path"])
    _write_split_lists(plan.out, rows)
    o = plan.options
    silence = write_unseen_engine_silence(plan.out, o.seed, plan.speakers, o.repeats, noise_names)
    _write_manifest(plan.out, rows)
    elapsed = time.perf_counter() - t0
    meta = corpus_meta(plan, rows, noise_names, silence, elapsed)
    _write_last(plan.out, meta)
    if progress:
        print(summary_line(meta, elapsed, plan.out), file=sys.stderr, flush=True)
    return meta


def plan_corpus(out: Path, options: CorpusOptions, workers: int | None) -> CorpusPlan:
    """The checked options and the speakers; ValueError for a bad option, naming it."""
    words, render = check_options(options)
    speakers = make_speakers(options)
    workers = max(1, min(workers or os.cpu_count() or 1, len(speakers)))
    return CorpusPlan(out, options, words, render, speakers, workers)


def _collector(rows: Rows, total: int, t0: float, progress: bool) -> Callable[[int, Rows], None]:
    """collect(speakers done, a speaker's rows): adds them to `rows`, printing progress every 10 %."""
    step = max(1, total // 10)

    def collect(done: int, speaker_rows: Rows) -> None:
        rows.extend(speaker_rows)
        if progress and (done % step == 0 or done == total):
            print(f"[synth] {done}/{total} speakers, {len(rows)} clips, "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    return collect


def _write_clips(plan: CorpusPlan, overwrite: bool, collect: Callable[[int, Rows], None]) -> tuple[str, ...]:
    """The background noise and every speaker's clips; the noise files' names."""
    o, out = plan.options, plan.out
    voice_root = Path(tempfile.mkdtemp(prefix="synth-espeak-"))
    try:
        data_path = prepare_voices(voice_root, plan.speakers)
        _prepare_out(out, plan.words, overwrite)  # only now touch `out`: all checks have passed
        noise_names = tuple(write_background_noise(out, o.seed, o.noise_seconds))
        for folder in {str(Path(clip_path(spk, w, 0)).parent) for spk in plan.speakers
                       for w in speaker_words(spk, plan.words)}:
            (out / folder).mkdir(parents=True, exist_ok=True)
        init_args = (str(out), o.seed, plan.words, o.repeats, plan.render, noise_names, data_path)
        render_speakers(plan.speakers, plan.workers, init_args, collect)
    finally:
        shutil.rmtree(voice_root, ignore_errors=True)
    return noise_names


def _remove_generated(out: Path, words: Sequence[str]) -> None:
    for name in (*words, NOISE_DIR, *UNSEEN_ENGINE_DIRS.values()):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (SYNTH_JSON, MANIFEST, VALIDATION_LIST, TESTING_LIST, VALIDATION_UNSEEN_LIST,
                 TESTING_UNSEEN_LIST, IN_PROGRESS):
        (out / name).unlink(missing_ok=True)


def _old_words(path: Path) -> list[str]:
    """The words a corpus's synth.json or IN_PROGRESS marker names ([] if unreadable)."""
    try:
        return json.loads(path.read_text())["words"]
    except (ValueError, KeyError, TypeError):
        return []


def _prepare_out(out: Path, words: tuple[str, ...], overwrite: bool) -> None:
    """Only ever deletes what this module wrote: a complete corpus (synth.json) when
    overwrite=True, or a half-written one (IN_PROGRESS marker). Any other non-empty
    directory (say, the real Speech Commands) is refused."""
    meta, marker = out / SYNTH_JSON, out / IN_PROGRESS
    if meta.exists():
        if not overwrite:
            raise FileExistsError(f"{meta} exists: {out} already holds a synthetic corpus; pass "
                                  "overwrite=True to regenerate it, or choose another directory")
        _remove_generated(out, [*_old_words(meta), *words])
    elif marker.exists():  # an earlier run died half-way: its files are ours to replace
        _remove_generated(out, [*_old_words(marker), *words])
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no {SYNTH_JSON}: refusing to write a "
                              "synthetic corpus into it; choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"words": list(words)}))


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_split_lists(out: Path, rows: Rows) -> None:
    """validation_list.txt, testing_list.txt and their unseen-voice subsets (never the unseen-engine parts)."""
    for name, split, unseen_only in ((VALIDATION_LIST, "validation", False),
                                     (TESTING_LIST, "testing", False),
                                     (VALIDATION_UNSEEN_LIST, "validation", True),
                                     (TESTING_UNSEEN_LIST, "testing", True)):
        _write_lines(out / name, [r["path"] for r in rows if r["split"] == split and r["part"] != "unseen_engine"
                                  and (r["unseen_voice"] or not unseen_only)])


def _write_manifest(out: Path, rows: Rows) -> None:
    with open(out / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_unseen_engine_silence(out: Path, seed: int, spk_list: Sequence[Speaker], repeats: int,
                                noise_names: Sequence[str]) -> dict[str, int]:
    """The _silence_ folder of each unseen-engine part: one 1 s stretch of a background-noise file
    per speaker and take (the share of the 12-class test set), at a level drawn from -45..-20 dBFS."""
    counts = {}
    for split, folder in UNSEEN_ENGINE_DIRS.items():
        n = sum(spk.unseen_engine and spk.split == split for spk in spk_list) * repeats
        if not n:
            continue
        (out / folder / SILENCE_LABEL).mkdir(parents=True, exist_ok=True)
        rng = rng_for(seed, "unseen engine silence", split)
        noises = [sf.read(str(out / NOISE_DIR / name), dtype="float64")[0] for name in noise_names]
        for i in range(n):
            x = noise_segment(noises[int(rng.integers(len(noises)))], CLIP_SAMPLES, rng)
            level = 10 ** (float(rng.uniform(-45.0, -20.0)) / 20)
            write_pcm16(out / folder / SILENCE_LABEL / f"silence_{i:04d}.wav",
                        x * level / (np.sqrt(np.mean(x ** 2)) + 1e-12))
        counts[split] = n
    return counts


def corpus_meta(plan: CorpusPlan, rows: Rows, noise_names: Sequence[str], silence: dict[str, int],
                elapsed: float) -> dict[str, Any]:
    """The content of synth.json."""
    o, words, spk_list = plan.options, plan.words, plan.speakers
    listed = [r for r in rows if r["part"] != "unseen_engine"]  # the clips of the split lists
    per_word = clips_per_word(listed, words)
    splits = split_summaries(spk_list, per_word)
    val_voices, test_voices = heldout_voices(o.seed, o.heldout_val_voices, o.heldout_test_voices)
    return {
        "format": "speech_commands_synth/3",
        "seed": o.seed,
        "params": _params(o, plan.render),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "keywords": list(KEYWORDS),
        "unknown_words": list(words[len(KEYWORDS):]),
        "words": list(words),
        "noise_files": [f"{NOISE_DIR}/{n}" for n in noise_names],
        "clips": len(rows),
        "clips_per_split": {s: splits[s]["clips"] for s in SPLITS},
        "clips_per_word": per_word,
        "speakers_per_split": {s: splits[s]["speakers"] for s in SPLITS},
        "heldout_voices": {"validation": list(val_voices), "testing": list(test_voices)},
        "splits": splits,
        "unseen_engine": unseen_engine_summary(spk_list, rows, silence),
        "stats": timing_stats(listed),
        "stats_per_engine": timing_stats_per_engine(rows),
        "speakers": [asdict(s) for s in spk_list],
        "workers": plan.workers,
        "elapsed_s": round(elapsed, 2),
    }


def _params(o: CorpusOptions, render: RenderOptions) -> dict[str, Any]:
    """synth.json's "params": the options as given, and the constants that shaped the corpus."""
    return dict(speakers=o.speakers, repeats=o.repeats, val_fraction=o.val_fraction,
                test_fraction=o.test_fraction,
                heldout_val_voices=_heldout_param(o.heldout_val_voices),
                heldout_test_voices=_heldout_param(o.heldout_test_voices), unseen_share=UNSEEN_SHARE,
                noise_seconds=o.noise_seconds, snr_db=list(render.snr_db), gain_db=list(GAIN_DB),
                pitch_range=list(PITCH_RANGE), rate_range=[int(r) for r in o.rate_range],
                vtl_range=[float(v) for v in o.vtl_range], placement=o.placement,
                center_jitter_ms=render.center_jitter_ms, pause_ms=list(render.pause_ms),
                max_speech_s=MAX_SPEECH_S, engines=check_engines(o.engines or ENGINE_WEIGHTS),
                heldout_engine_val=o.heldout_engine_val, heldout_engine_test=o.heldout_engine_test,
                unseen_engine_speakers=o.unseen_engine_speakers, word_duration=o.word_duration,
                tempo_range={e: list(r) for e, r in TEMPO_RANGE.items()},
                pico_pitch_range=list(PICO_PITCH_RANGE),
                excluded_voices=sorted(f"{e}:{v}" for e, v in EXCLUDED_VOICES))


def _heldout_param(heldout: HeldoutVoices) -> int | list[str]:
    parsed = parse_heldout("heldout voices", heldout)
    return parsed if isinstance(parsed, int) else list(parsed)


def _write_last(out: Path, meta: dict[str, Any]) -> None:
    """synth.json, atomically, then the IN_PROGRESS marker goes: synth.json exists only for a complete corpus."""
    tmp = out / f"{SYNTH_JSON}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / SYNTH_JSON)  # atomic: synth.json exists only for a complete corpus
    (out / IN_PROGRESS).unlink(missing_ok=True)
