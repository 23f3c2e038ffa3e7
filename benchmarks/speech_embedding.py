"""Does a speech embedding learned from human speech make the teacher hear words?

    python benchmarks/speech_embedding.py --train /work/data/exp/mbx4 --corpus data/synth-sc \
        --work DIR [--teacher RUN/stages/teacher/model] [--second-opinion CORPUS] [--seeds 4] [--json OUT]

Google's speech embedding (Lin et al. 2020, "Training keyword spotters with limited and
synthesized speech data"; the ONNX export that openWakeWord 0.5.1 ships in its wheel, Apache 2.0)
was trained on human speech. Frozen, it turns a clip into 96-number embeddings of 775 ms
windows every 80 ms. A small head (a convolution over the windows, max over time) learns the
corpus's 12 classes from the training corpus's clips, and keeps the epoch best on the
validation split. It is scored alone and, when `--teacher` names a 1000 ms model directory, as
an ensemble with that teacher (posteriors averaged with weight w on the embedding's), on the
same parts as `benchmarks/engine_choice.py`: validation, unseen-accent validation, the
unseen-engine validation part (what chooses), and, for the record, test, unseen accents and the
unseen-engine test part; `--second-opinion` adds another corpus's unseen-engine validation part.

A probe outside the chain (the platform's network is `model: speech_embedding`, the same
embedding ported to PyTorch). `--gain-db` scales the input first, as the model's
`input_gain_db` does. Each part's embeddings are cached in WORK as .npz, per gain (about 15 ms
a clip on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from distill.core.checkpoint import load_model_dir
from distill.core.protocols import window_posteriors
from distill.core.speech_embedding import model_files  # the same files the platform's network reads
from distill.data.audio import decode_clip
from distill.data.base import build_source_index, parse_data_spec

SAMPLE_RATE = 16_000
PAD_SAMPLES = 6_400       # 0.4 s of zeros each side: a 775 ms window then covers every placement
WINDOW_FRAMES, STEP_FRAMES, DIM = 76, 8, 96   # the embedding's window and hop in 10 ms frames
WEIGHTS = (0.3, 0.5, 0.7)  # the embedding's share of an ensemble's posterior


class SpeechEmbedding:
    """Waveforms (n, samples) at 16 kHz in [-1, 1] -> embeddings (n, windows, 96); ``gain_db`` on
    the input first (the model's `input_gain_db`)."""

    def __init__(self, threads: int = 2, gain_db: float = 0.0):
        self.scale = 32767.0 * 10 ** (gain_db / 20)
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        mel, emb = model_files()
        self.mel = ort.InferenceSession(str(mel), options, providers=["CPUExecutionProvider"])
        self.emb = ort.InferenceSession(str(emb), options, providers=["CPUExecutionProvider"])

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        if np.asarray(waves).dtype == np.int16:
            raise ValueError("waveforms must be float in [-1, 1], not int16 samples")
        x = np.pad(np.asarray(waves, np.float32), ((0, 0), (PAD_SAMPLES, PAD_SAMPLES))) * self.scale
        spec = self.mel.run(None, {"input": x})[0][:, 0] / 10 + 2  # openWakeWord's scaling to the TF original
        starts = range(0, spec.shape[1] - WINDOW_FRAMES + 1, STEP_FRAMES)
        windows = np.stack([spec[:, s:s + WINDOW_FRAMES] for s in starts], 1)
        out = self.emb.run(None, {"input_1": windows.reshape(-1, WINDOW_FRAMES, 32, 1).astype(np.float32)})[0]
        return out.reshape(len(waves), len(starts), DIM)


class Head(nn.Module):
    """Two convolutions over the sequence of embeddings, max over time: a word anywhere in the clip."""

    def __init__(self, classes: int, width: int = 128, dropout: float = 0.3):
        super().__init__()
        self.norm = nn.LayerNorm(DIM)
        self.conv = nn.Sequential(nn.Conv1d(DIM, width, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(self.norm(x).transpose(1, 2)).amax(-1))


def train_head(x: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor], classes: int,
               seed: int, epochs: int = 60, batch: int = 64) -> tuple[Head, int]:
    """The head at its best epoch on `val` (the first, on a tie), and that epoch."""
    torch.manual_seed(seed)
    head = Head(classes)
    opt = torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=1e-2)
    best, best_epoch, best_state = -1.0, -1, None
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(x))
        for i in range(0, len(order), batch):
            b = order[i:i + batch]
            xb = x[b] + 0.1 * x.std() * torch.randn_like(x[b])  # embedding noise: the only augmentation
            loss = nn.functional.cross_entropy(head(xb), y[b], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = accuracy(posteriors(head, val[0]), val[1])
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head.eval(), best_epoch


@torch.no_grad()
def posteriors(head: Head, x: torch.Tensor) -> torch.Tensor:
    head.eval()
    return torch.softmax(head(x), -1)


def accuracy(post: torch.Tensor, y: torch.Tensor) -> float:
    return round(float((post.argmax(-1) == y).float().mean()), 4)


def parts(corpus: Path, work: Path, second_opinion: Path | None) -> dict[str, tuple[str, str]]:
    """name -> (data spec, split), as benchmarks/engine_choice.py scores a teacher."""
    for name, field, split in (("unseen_accent_validation", "validation_list", "validation"),
                               ("unseen_accent_test", "testing_list", "testing")):
        (work / f"{name}.yaml").write_text(f"data:\n  name: speech_commands\n  path: {corpus}\n"
                                           f"  {field}: {split}_unseen_voice_list.txt\n")
    out = {"validation": (f"speech_commands:{corpus}", "validation"),
           "unseen_accent_validation": (str(work / "unseen_accent_validation.yaml"), "validation"),
           "unseen_engine_validation": (f"speech_commands_test:{corpus}/_unseen_engine_validation_", "test"),
           "test": (f"speech_commands:{corpus}", "test"),
           "unseen_accent_test": (str(work / "unseen_accent_test.yaml"), "test"),
           "unseen_engine_test": (f"speech_commands_test:{corpus}/_unseen_engine_test_", "test")}
    if second_opinion is not None:
        out["second_opinion"] = (f"speech_commands_test:{second_opinion}/_unseen_engine_validation_", "test")
    return out


def clips(spec: str, split: str):
    index = build_source_index(parse_data_spec(spec))
    return index.clips[index.clips.split == split].reset_index(drop=True), list(index.labels)


def waveforms(frame) -> np.ndarray:
    """The clips as float in [-1, 1] (decode_clip gives int16 samples)."""
    return np.stack([decode_clip(p, s, SAMPLE_RATE, SAMPLE_RATE) for p, s in zip(frame.path, frame.start)]
                    ).astype(np.float32) / 32768.0


def embedded(name: str, spec: str, split: str, work: Path, embed: SpeechEmbedding, labels: list[str]):
    """(embeddings, label indices, clip ids) of a part, cached in WORK/NAME.npz."""
    cache = work / f"{name}.npz"
    if not cache.exists():
        frame, _ = clips(spec, split)
        started = time.perf_counter()
        emb = np.concatenate([embed(waveforms(frame[i:i + 64])) for i in range(0, len(frame), 64)])
        np.savez(cache, emb=emb.astype(np.float32), label=np.array(frame.label, dtype=str),
                 clip=np.array(frame.clip_id, dtype=str))
        print(f"{name}: {len(frame)} clips embedded in {time.perf_counter() - started:.0f} s", flush=True)
    data = np.load(cache, allow_pickle=False)
    unknown = sorted(set(data["label"]) - set(labels))
    if unknown:
        raise ValueError(f"{cache}: labels {unknown} are not among the training corpus's {labels}")
    return (torch.from_numpy(data["emb"]), torch.tensor([labels.index(v) for v in data["label"]]),
            data["clip"])


def teacher_posteriors(model_dir: str, spec: str, split: str, labels: list[str], ids: np.ndarray) -> torch.Tensor:
    """The 1000 ms teacher's posteriors on a part's clips, in the embedding cache's order and label order."""
    model, mspec = load_model_dir(model_dir)
    if list(mspec.labels) != labels:
        raise ValueError(f"{model_dir}: its labels {list(mspec.labels)} differ from the corpus's {labels}")
    frame, _ = clips(spec, split)
    if not np.array_equal(np.array(frame.clip_id), ids):
        raise ValueError(f"{spec} ({split}): the clips differ from the cached embeddings'; delete the cache")
    waves = waveforms(frame)
    starts = np.zeros((len(waves), 1), dtype=int)  # the whole 1 s clip: the teacher's every protocol
    return window_posteriors(model.eval(), waves, mspec.input_samples, starts)[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="the corpus whose training split the head learns")
    ap.add_argument("--corpus", type=Path, required=True, help="the corpus whose parts score it")
    ap.add_argument("--work", type=Path, required=True, help="where embeddings are cached")
    ap.add_argument("--teacher", help="a 1000 ms model directory to ensemble with")
    ap.add_argument("--second-opinion", type=Path, help="a corpus whose unseen-engine validation part is scored too")
    ap.add_argument("--gain-db", type=float, default=0.0, help="on the input before the embedding's front end")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    args.work.mkdir(parents=True, exist_ok=True)
    embed = SpeechEmbedding(gain_db=args.gain_db)
    tag = f"@{args.gain_db:+.1f}dB"  # the cache is per input gain
    train_frame_spec = f"speech_commands:{args.train.resolve()}"
    _, labels = clips(train_frame_spec, "train")
    x, y, _ = embedded("train" + tag, train_frame_spec, "train", args.work, embed, labels)
    specs = parts(args.corpus.resolve(), args.work, args.second_opinion)
    scored = {name: embedded(name + tag, spec, split, args.work, embed, labels) for name, (spec, split) in specs.items()}
    teacher = ({name: teacher_posteriors(args.teacher, *specs[name], labels, ids)
                for name, (_, _, ids) in scored.items()} if args.teacher else None)
    rows = []
    if teacher:
        rows.append({"model": "teacher", "seed": None,
                     **{name: accuracy(teacher[name], scored[name][1]) for name in scored}})
    for seed in range(args.seeds):
        head, epoch = train_head(x, y, scored["validation"][:2], len(labels), seed, args.epochs)
        post = {name: posteriors(head, xs) for name, (xs, _, _) in scored.items()}
        rows.append({"model": "embedding", "seed": seed, "epoch": epoch,
                     **{name: accuracy(post[name], scored[name][1]) for name in scored}})
        for w in WEIGHTS if teacher else ():
            rows.append({"model": f"ensemble w={w}", "seed": seed,
                         **{name: accuracy(w * post[name] + (1 - w) * teacher[name], scored[name][1])
                            for name in scored}})
        print(json.dumps(rows[-1 - (len(WEIGHTS) if teacher else 0):]), flush=True)
    names = list(scored)
    print("| model | seed | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['model']} | {r['seed']} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps({"train": str(args.train), "corpus": str(args.corpus), "gain_db": args.gain_db,
                                         "teacher": args.teacher, "clips": {n: len(v[1]) for n, v in scored.items()},
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
