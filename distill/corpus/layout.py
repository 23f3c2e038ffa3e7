"""What a synthetic corpus is on disk: the exact layout of Google Speech Commands, plus four files.

Layout written under `out` (the same as speech_commands_v0.02, plus four extra files):

    <out>/<word>/<speaker>_nohash_<k>.wav   16 kHz mono PCM_16, exactly 16000 samples
    <out>/_background_noise_/*.wav          long noise recordings (generated with numpy)
    <out>/validation_list.txt               "word/file.wav" per line, sorted
    <out>/testing_list.txt                  (files in neither list are training data)
    <out>/validation_unseen_voice_list.txt  the clips of these two lists whose voice (accent)
    <out>/testing_unseen_voice_list.txt     no training speaker has: subsets of the above
    <out>/synth_manifest.csv                one row per clip: who says it, where the word is, ...
    <out>/synth.json                        parameters, counts and timing statistics; written
                                            LAST, so its presence means the corpus is complete

The unseen-engine parts (distill.corpus.speakers) are written beside it as prepared 12-class
test sets, under UNSEEN_ENGINE_DIRS.
"""

from __future__ import annotations

# Speech Commands' auxiliary words: the "unknown" class in the 12-class task.
UNKNOWN_WORDS: tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
    "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
)

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000  # exactly 1 s, like every Speech Commands clip
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
VALIDATION_UNSEEN_LIST = "validation_unseen_voice_list.txt"
TESTING_UNSEEN_LIST = "testing_unseen_voice_list.txt"
MANIFEST = "synth_manifest.csv"
SYNTH_JSON = "synth.json"
IN_PROGRESS = ".synth_in_progress"  # marks a half-written corpus that we may clean up
MANIFEST_COLUMNS = ("path", "word", "speaker", "engine", "voice", "variant", "pitch", "rate", "tempo",
                    "vtl_factor", "split", "part", "unseen_voice", "speech_start_ms", "speech_end_ms",
                    "speech_cut_ms", "gain_db", "snr_db", "noise_file")
PARTS = ("seen", "unseen_accent", "unseen_engine")  # manifest `part`: what of the speaker training knows
# The unseen-engine parts: prepared 12-class test sets (the layout of name: speech_commands_test), in
# folders the Speech Commands loader never reads as words (a leading underscore), so never trained on.
UNSEEN_ENGINE_DIRS = {"validation": "_unseen_engine_validation_", "testing": "_unseen_engine_test_"}
UNKNOWN_LABEL, SILENCE_LABEL = "_unknown_", "_silence_"  # a prepared test set's other two folders
SPLITS = ("train", "validation", "testing")
