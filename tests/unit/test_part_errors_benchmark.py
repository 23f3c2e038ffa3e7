"""benchmarks/part_errors.py: a part's accuracy by voice (from the corpus's manifest) and by word,
and its confusions, tallied from the model's stream-protocol predictions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import soundfile as sf

from distill.core.checkpoint import ModelSpec, save_model_dir
from distill.core.features import FeatureConfig
from distill.core.models import build_model
from distill.names import SILENCE, UNKNOWN

spec = importlib.util.spec_from_file_location("part_errors",
                                              Path(__file__).resolve().parents[2] / "benchmarks" / "part_errors.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def test_a_part_is_tallied_by_voice_word_and_confusion(tmp_path, monkeypatch):
    corpus, part = tmp_path / "corpus", "_unseen_engine_validation_"
    for label in [SILENCE, UNKNOWN, *WORDS]:
        (corpus / part / label).mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {"yes/a1_nohash_0.wav": "v1", "yes/a2_nohash_0.wav": "v2", "no/a3_nohash_0.wav": "v1",
             "no/a4_nohash_0.wav": "v1", "go/a5_nohash_0.wav": "v2", f"{SILENCE}/s1_nohash_0.wav": None}
    for name in files:
        sf.write(corpus / part / name, (rng.standard_normal(16000) * 1000).astype(np.int16), 16000, subtype="PCM_16")
    rows = [f"{part}/{name},word,spk,festival,{voice},,,,,1.0,testing,unseen_engine,0,0,0,0,0,0,"
            for name, voice in files.items() if voice]
    (corpus / "synth_manifest.csv").write_text(
        "path,word,speaker,engine,voice,variant,pitch,rate,tempo,vtl_factor,split,part,unseen_voice,speech_start_ms,"
        "speech_end_ms,speech_cut_ms,gain_db,snr_db,noise_file\n" + "\n".join(rows) + "\n")
    labels = [SILENCE, UNKNOWN, *WORDS]
    model_dir = save_model_dir(tmp_path / "model", build_model("tiny", len(labels)),
                               ModelSpec("tiny", {}, labels, 1000, FeatureConfig().model_dump()))
    # every clip answered "yes": right on the two yes clips only
    monkeypatch.setattr(bench, "predict", lambda model, waves, *a, **k: np.full(len(waves), labels.index("yes")))
    r = bench.part_errors(str(model_dir), corpus, part)
    assert r["clips"] == 6 and r["accuracy"] == round(2 / 6, 4)
    assert r["by_voice"] == {"-:-": [0.0, 1], "festival:v1": [round(1 / 3, 3), 3], "festival:v2": [0.5, 2]}
    assert r["by_word"] == {SILENCE: [0.0, 1], "go": [0.0, 1], "no": [0.0, 2], "yes": [1.0, 2]}
    assert r["confusions"] == {"no -> yes": 2, "_silence_ -> yes": 1, "go -> yes": 1}
