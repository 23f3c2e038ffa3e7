"""What synth.json says about a corpus besides its parameters: clips and speakers per split and
word, the unseen-engine parts, where and how long the words are; and the one line printed at
the end of `pld data synth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from distill.corpus.engines import ENGINES
from distill.corpus.layout import SPLITS, UNSEEN_ENGINE_DIRS
from distill.corpus.speakers import Speaker
from distill.names import KEYWORDS


def timing_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where and how long the words are, over manifest rows (numbers, or the CSV's strings).
    word_ms is the word inside the clip (speech_end_ms - speech_start_ms); spoken_word_ms adds
    back what the clip edges cut off."""
    def col(key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in rows])

    def quantiles(x: np.ndarray) -> dict[str, float]:
        return {f"p{p}" if p != 50 else "median": round(float(np.percentile(x, p)), 1)
                for p in (10, 50, 90)}

    start, end, cut = col("speech_start_ms"), col("speech_end_ms"), col("speech_cut_ms")
    word = end - start
    return {
        "word_ms": {**quantiles(word), "mean": round(float(word.mean()), 1),
                    "share_over_500ms": round(float(np.mean(word > 500)), 4)},
        "spoken_word_ms": quantiles(word + cut),
        "speech_start_ms": quantiles(start),
        "speech_end_ms": quantiles(end),
        # what a centred 500 ms crop sees: the whole word, or not
        "share_whole_word_in_center_500ms": round(float(np.mean((start >= 250) & (end <= 750)
                                                                 & (cut == 0))), 4),
        "share_cut_by_clip_edge": round(float(np.mean(cut > 0)), 4),
    }


def timing_stats_per_engine(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """timing_stats of each "engine/part" (part: seen, unseen_accent, unseen_engine)."""
    return {f"{e}/{part}": timing_stats(group) for (e, part), group in _groups(rows).items()}


def clips_per_word(listed: Sequence[dict[str, Any]], words: Sequence[str]) -> dict[str, dict[str, int]]:
    """word -> split -> clips, over the rows of the split lists."""
    per_word = {w: {s: 0 for s in SPLITS} for w in words}
    for r in listed:
        per_word[r["word"]][r["split"]] += 1
    return per_word


def split_summaries(spk_list: Sequence[Speaker], per_word: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per split of the seen speakers: speakers, those of a held-out accent, clips, engines, voices."""
    splits = {}
    for s in SPLITS:
        members = [spk for spk in spk_list if spk.split == s and not spk.unseen_engine]
        splits[s] = {"speakers": len(members),
                     "unseen_voice_speakers": sum(spk.unseen_voice for spk in members),
                     "clips": sum(c[s] for c in per_word.values()),
                     "engines": {e: n for e in ENGINES if (n := sum(spk.engine == e for spk in members))},
                     "voices": _count(f"{spk.engine}:{spk.voice}" for spk in members)}
    return splits


def unseen_engine_summary(spk_list: Sequence[Speaker], rows: Sequence[dict[str, Any]],
                          silence: dict[str, int]) -> dict[str, Any]:
    """Per unseen-engine part: its folder (evaluate it as name: speech_commands_test), engine,
    voices, speakers and clips per label kind."""
    out = {}
    for split, folder in UNSEEN_ENGINE_DIRS.items():
        members = [spk for spk in spk_list if spk.unseen_engine and spk.split == split]
        if not members:
            continue
        part_rows = [r for r in rows if r["part"] == "unseen_engine" and r["split"] == split]
        keyword = sum(r["word"] in KEYWORDS for r in part_rows)
        out[split] = {"path": folder, "engine": members[0].engine,
                      "voices": _count(spk.voice for spk in members), "speakers": len(members),
                      "clips": {"keywords": keyword, "unknown": len(part_rows) - keyword,
                                "silence": silence.get(split, 0)},
                      "clips_total": len(part_rows) + silence.get(split, 0)}
    return out


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r["part"]), []).append(r)
    return dict(sorted(groups.items()))


def summary_line(meta: dict, elapsed: float, out: Path) -> str:
    """The one line `pld data synth` ends with: clips, time, word lengths, splits, held-out parts."""
    st, sp, p = meta["stats"], meta["splits"], meta["params"]
    w = st["word_ms"]
    held = meta["heldout_voices"]
    return (f"[synth] done: {meta['clips']} clips ({len(meta['words'])} words x {p['speakers']} "
            f"speakers x {p['repeats']}) in {elapsed:.1f}s ({meta['clips'] / elapsed:.0f} clips/s) "
            f"-> {out}; word {w['median']:.0f} ms median (p10 {w['p10']:.0f}, p90 {w['p90']:.0f}, "
            f"{100 * w['share_over_500ms']:.0f}% > 500 ms), {p['placement']}: whole word in the "
            f"centred 500 ms {100 * st['share_whole_word_in_center_500ms']:.0f}%, cut by the clip "
            f"edge {100 * st['share_cut_by_clip_edge']:.0f}%; speakers train/val/test "
            f"{sp['train']['speakers']}/{sp['validation']['speakers']}/{sp['testing']['speakers']}, "
            f"unseen voices val {held['validation']} ({sp['validation']['unseen_voice_speakers']} "
            f"speakers), test {held['testing']} ({sp['testing']['unseen_voice_speakers']})"
            + "".join(f"; unseen engine {split} {u['engine']} {sorted(u['voices'])}: {u['clips_total']} clips in "
                      f"{u['path']}/" for split, u in meta["unseen_engine"].items()))
