"""The synthetic keyword-spotting corpus behind `pld data synth`, in the exact layout of Google
Speech Commands.

Why this exists: the whole PLD pipeline (loading, teacher training, distillation,
evaluation) must run end to end on a laptop or CI box without downloading the 2.3 GB
Speech Commands archive. Words are spoken by espeak-ng -- the shared library and voice
data shipped inside the `espeakng_loader` wheel, driven through ctypes (distill.corpus.espeak)
-- and by Festival, Pico, hibari and MBROLA (distill.corpus.engines), so no network access
is needed. distill.data reads the result like any other Speech Commands copy; nothing there
depends on this package.

The modules, in the order a corpus is made:
    options    CorpusOptions (every option, with its default) and RenderOptions; their checks
    layout     the files of a corpus: vocabulary, sample rate, list and manifest names
    voices     the voices a speaker may get; held-out accents; dealing engines and voices
    speakers   Speaker, the splits, make_speakers; what each speaker says and where it goes
    speaking   a take's engine settings, the engines' calls, words kept short enough
    sound      noise, resampling, where the speech is, the loudest second, WAV files
    rendering  a spoken word placed over noise in a 1 s clip; the worker processes
    summary    synth.json's counts and timing statistics, the closing summary line
    writer     synthesize_corpus: checks, then noise, clips, lists, manifest, synth.json
    streams    the named random streams that make a corpus the same for any number of workers
    engines, espeak, festival, mbrola: the speech engines
"""
