"""Named random streams: why a corpus is the same whatever the number of worker processes.

Determinism: a clip depends only on (seed, speaker index, word, k), never on which worker
process renders it or in what order; every random draw comes from a stream named by those
(see rng_for), and espeak gets a fresh library instance and a seeded breath-noise generator per
utterance (see distill.corpus.espeak).
"""

from __future__ import annotations

import hashlib

import numpy as np


def rng_for(seed: int, *parts: int | str) -> np.random.Generator:
    """Independent random stream named by (seed, *parts): strings are hashed, so the stream
    never depends on process order or on how many other streams were drawn before."""
    key = [seed % 2**64] + [p if isinstance(p, int) else _str_key(p) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(key))


def _str_key(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")
