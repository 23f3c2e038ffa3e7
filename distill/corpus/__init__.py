"""The synthetic keyword-spotting corpus behind `pld data synth`: its speakers, its speech engines
(espeak-ng, Festival, Pico, hibari, MBROLA) and the writer of the Speech Commands layout.

Kept apart from distill.data, which only reads datasets: nothing here is needed to train or
evaluate, and nothing in distill.data needs this package.
"""
