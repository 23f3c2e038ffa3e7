"""``pld data synth``: its flags, and the CorpusOptions they make."""

from __future__ import annotations

import argparse


def add_synth_arguments(synth: argparse.ArgumentParser) -> None:
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--speakers", type=int, default=40, help="number of synthetic speakers")
    synth.add_argument("--repeats", type=int, default=1, help="utterances of each word per speaker")
    synth.add_argument("--unknown-words", type=int, default=20,
                       help="how many non-keyword words to synthesize for _unknown_ (of 20)")
    synth.add_argument("--rate-range", type=int, nargs=2, metavar=("LO", "HI"),
                       help="speaking rate of a speaker, words/min (default 80 120; espeak's slowest is 80)")
    synth.add_argument("--word-duration", type=float, metavar="F",
                       help="every word's duration x F, every engine alike: espeak's rate / F, the others' tempo x F "
                            "(default 1; 0.6: short words)")
    synth.add_argument("--vtl-range", type=float, nargs=2, metavar=("LO", "HI"),
                       help="vocal-tract factor of a speaker: formants and pitch x factor (default 0.9 1.1; 1 1: off)")
    synth.add_argument("--placement", choices=("uniform", "center", "loudest"),
                       help="where the word is in the 1 s clip: anywhere it fits, centred +- jitter, or the loudest "
                            "1 s of a longer recording, as Speech Commands was cut (default loudest)")
    synth.add_argument("--center-jitter-ms", type=float, metavar="MS",
                       help="+- jitter of --placement center (default 100)")
    synth.add_argument("--pause-ms", type=float, nargs=2, metavar=("LO", "HI"),
                       help="leading and trailing pause around the word in a --placement loudest recording "
                            "(default 100 500)")
    synth.add_argument("--heldout-val-voices", metavar="N|VOICES",
                       help="voices (accents) only validation speakers have: a count drawn by seed, or names "
                            "(en-029,en-us-nyc); 0: none (default 1)")
    synth.add_argument("--heldout-test-voices", metavar="N|VOICES",
                       help="voices only test speakers have, listed in testing_unseen_voice_list.txt (default 2)")
    synth.add_argument("--val-fraction", type=float, help="share of the seen speakers in validation (default 0.1)")
    synth.add_argument("--test-fraction", type=float, help="share of the seen speakers in test (default 0.1)")
    synth.add_argument("--engines", metavar="ENGINE=W,...",
                       help="engines of the seen speakers and their weights, of espeak, festival, pico, hibari, mbrola, "
                            "openjtalk, rhvoice "
                            "(default espeak=2,festival=1,pico=1)")
    synth.add_argument("--heldout-engine-val", metavar="ENGINE[:FAMILY]",
                       help="engine or voice family of the validation unseen-engine part (default festival:czech)")
    synth.add_argument("--heldout-engine-test", metavar="ENGINE[:FAMILY]",
                       help="engine or voice family of the test unseen-engine part (default hibari)")
    synth.add_argument("--unseen-engine-speakers", type=int, metavar="N",
                       help="speakers of each unseen-engine part, 12 clips each (default 36; 0: no such parts, and "
                            "their engines or families are dealt to training speakers like the others)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing corpus")


def synthesize_from_args(args: argparse.Namespace) -> dict:
    """``pld data synth``: the corpus its flags describe (a flag not given keeps CorpusOptions' default)."""
    from distill.corpus.layout import UNKNOWN_WORDS
    from distill.corpus.options import CorpusOptions
    from distill.corpus.writer import synthesize_corpus

    if not 1 <= args.unknown_words <= len(UNKNOWN_WORDS):
        raise ValueError(f"--unknown-words must be between 1 and {len(UNKNOWN_WORDS)}")
    given = {key: value for key, value in (
        ("rate_range", args.rate_range), ("vtl_range", args.vtl_range), ("placement", args.placement),
        ("center_jitter_ms", args.center_jitter_ms), ("pause_ms", args.pause_ms),
        ("heldout_val_voices", _voices_arg(args.heldout_val_voices)),
        ("heldout_test_voices", _voices_arg(args.heldout_test_voices)), ("val_fraction", args.val_fraction),
        ("test_fraction", args.test_fraction), ("engines", _engines_arg(args.engines)),
        ("heldout_engine_val", args.heldout_engine_val), ("heldout_engine_test", args.heldout_engine_test),
        ("unseen_engine_speakers", args.unseen_engine_speakers), ("word_duration", args.word_duration))
        if value is not None}
    options = CorpusOptions(seed=args.seed, speakers=args.speakers, repeats=args.repeats,
                            unknown_words=UNKNOWN_WORDS[:args.unknown_words], **given)
    return synthesize_corpus(args.out, options, workers=args.workers, overwrite=args.overwrite)


def _engines_arg(value: str | None) -> dict[str, float] | None:
    """--engines: "espeak=2,festival=1,pico=1" (a name alone weighs 1)."""
    if value is None:
        return None
    weights = {}
    for item in (part.strip() for part in value.split(",") if part.strip()):
        name, _, weight = item.partition("=")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--engines: {item!r} is not ENGINE or ENGINE=WEIGHT") from None
    return weights


def _voices_arg(value: str | None) -> int | str | None:
    """--heldout-*-voices: a count ("2") or voice names ("en-029,en-us-nyc")."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value
