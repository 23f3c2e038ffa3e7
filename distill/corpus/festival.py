"""Festival through its command line: many utterances of one voice per process.

Why a batch per call: starting Festival and loading a voice costs ~0.2 s, an utterance ~20 ms,
so a speaker's whole vocabulary is spoken by one `festival --batch` run of a generated Scheme
script that writes one WAV per utterance. Festival is deterministic: the same script gives the
same samples. Voices come from Debian's festvox-* packages (FESTIVAL_VOICES names each one's
package); `make install` installs them, and a missing one is reported with the apt-get line.

Festival's `kal_diphone` and `cmu_us_slt_arctic_hts` voices are deliberately absent: they are
kept for held-out evaluation and are never synthesized with here.
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

# voice -> (Debian package, family). A family is the unit a corpus may hold out as an unseen
# engine: voices built alike, for one language, by one group.
FESTIVAL_VOICES: dict[str, tuple[str, str]] = {
    "ked_diphone": ("festvox-kdlpc16k", "english"),
    "lp_diphone": ("festvox-italp16k", "italian"),
    "pc_diphone": ("festvox-itapc16k", "italian"),
    "czech_dita": ("festvox-czech-dita", "czech"),
    "czech_krb": ("festvox-czech-krb", "czech"),
    "czech_machac": ("festvox-czech-machac", "czech"),
    "czech_ph": ("festvox-czech-ph", "czech"),
    "hy_fi_mv_diphone": ("festvox-suopuhe-mv", "finnish"),
    "suo_fi_lj_diphone": ("festvox-suopuhe-lj", "finnish"),
    "msu_ru_nsh_clunits": ("festvox-ru", "russian"),
    "upc_ca_ona_hts": ("festvox-ca-ona-hts", "catalan"),
}
FORBIDDEN_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")  # held-out evaluation only: never used
INSTALL_HINT = "apt-get install festival " + " ".join(sorted({p for p, _ in FESTIVAL_VOICES.values()}))
TIMEOUT_S = 600

_SCRIPT_HEAD = """(define (pld_say text stretch out)
  (Parameter.set 'Duration_Stretch stretch)
  (set! utt (eval (list 'Utterance 'Text text)))
  (utt.synth utt)
  (utt.save.wave utt out 'riff))
"""


def family_of(voice: str) -> str:
    return FESTIVAL_VOICES[voice][1]


@lru_cache(maxsize=1)
def festival_binary() -> str:
    path = shutil.which("festival")
    if path is None:
        raise RuntimeError(f"Festival is not installed (no `festival` on PATH); install it with `{INSTALL_HINT}` "
                           "(`make install` does this), or synthesize with --engines espeak only")
    return path


def _scheme_string(text: str) -> str:
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"festival: text {text!r} has a quote, backslash or newline")
    return f'"{text}"'


def _check_names(voices: Sequence[str]) -> None:
    bad = [v for v in voices if v in FORBIDDEN_VOICES]
    if bad:
        raise ValueError(f"festival voice(s) {bad} are reserved for held-out evaluation and never synthesized with")
    unknown = [v for v in voices if v not in FESTIVAL_VOICES]
    if unknown:
        raise ValueError(f"unknown festival voice(s) {unknown}; choose from {sorted(FESTIVAL_VOICES)}")


def check_voices(voices: Sequence[str]) -> None:
    """Fail early, naming the Debian package, if Festival or any of `voices` is missing."""
    _check_names(voices)
    wanted = sorted(set(voices))
    if not wanted:
        return
    installed = set(_run("(print (voice.list))\n", "listing voices").strip().strip("()").split())
    missing = [v for v in wanted if v not in installed]
    if missing:
        packages = " ".join(sorted({FESTIVAL_VOICES[v][0] for v in missing}))
        raise RuntimeError(f"festival voice(s) {missing} are not installed; install them with "
                           f"`apt-get install {packages}` (`make install` does this)")


def _run(script: str, what: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        proc = subprocess.run([festival_binary(), "--batch", path], capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    finally:
        Path(path).unlink(missing_ok=True)
    if proc.returncode < 0:
        raise _Crashed(f"festival crashed {what} (signal {-proc.returncode}): {proc.stderr.strip()[-300:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"festival failed {what} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def festival_synthesize(voice: str, texts: Sequence[str], stretches: Sequence[float]
                        ) -> list[tuple[np.ndarray, int]]:
    """Each of `texts` spoken by `voice` at its Duration_Stretch (1 = the voice's own tempo; some
    voices, such as clunits and HTS ones, ignore it): (float64 samples in [-1, 1], sample rate)."""
    if len(texts) != len(stretches):
        raise ValueError("festival_synthesize: one stretch per text")
    _check_names([voice])
    try:
        return _synthesize_once(voice, texts, stretches)
    except _Crashed:  # some voices (the Italian ones) crash after a few utterances in one process
        return [_synthesize_alone(voice, t, s) for t, s in zip(texts, stretches)]


# A voice that crashed in a batch is asked again one utterance per process. Rarely (pc_diphone,
# once in ~4,000 utterances) even that crashes, and not again on the next try: try twice as it
# is, then at a 2 % slower and faster tempo, before giving up on the voice.
ALONE_STRETCH_NUDGES = (1.0, 1.0, 1.02, 0.98)


def _synthesize_alone(voice: str, text: str, stretch: float) -> tuple[np.ndarray, int]:
    for nudge in ALONE_STRETCH_NUDGES:
        try:
            return _synthesize_once(voice, [text], [stretch * nudge])[0]
        except _Crashed as exc:
            crash = exc
    raise RuntimeError(f"festival voice {voice} crashed on {text!r} (Duration_Stretch {stretch:.3f}) "
                       f"{len(ALONE_STRETCH_NUDGES)} times, last: {crash}; leave its family out with --engines, "
                       "or synthesize with another --seed") from None


class _Crashed(RuntimeError):
    """Festival died from a signal (a crash inside a voice), not from a bad script."""


def _synthesize_once(voice: str, texts: Sequence[str], stretches: Sequence[float]) -> list[tuple[np.ndarray, int]]:
    with tempfile.TemporaryDirectory(prefix="pld-festival-") as tmp:
        outs = [Path(tmp) / f"{i}.wav" for i in range(len(texts))]
        lines = [_SCRIPT_HEAD, f"(voice_{voice})\n"]
        lines += [f"(pld_say {_scheme_string(t)} {float(s):.6f} {_scheme_string(str(o))})\n"
                  for t, s, o in zip(texts, stretches, outs)]
        _run("".join(lines), f"speaking {len(texts)} utterance(s) with voice {voice}")
        results = []
        for text, path in zip(texts, outs):
            if not path.is_file():
                raise RuntimeError(f"festival wrote no audio for {text!r} with voice {voice}")
            x, rate = sf.read(str(path), dtype="float64", always_2d=True)
            results.append((x.mean(axis=1), int(rate)))
        return results
