"""What makes an untrained wav2vec 2.0 good at birth? Random-weight networks, scored layer by layer.

Pretraining starts from random weights, and on hydrophone sound a random network's layers already
score most of what log-mel statistics score (`tiny` far more than `small`). This benchmark takes
one labelled corpus (as bench/learning.py builds it), draws networks with random weights for each
variant below (several seeds), and scores every layer, plus the convolutional encoder's own output
before the feature projection ("cnn"), with the linear probe of `ceta2vec evaluate` (splits by
recording). Each variant changes one thing of a preset, so the table says which part of the
architecture makes the difference:

  tiny, small                 the presets
  small/tiny-convs            small with tiny's convolution widths (32 -> 128 channels)
  tiny/small-convs            tiny with small's convolution widths (128 -> 384)
  small/tiny-transformer      small's encoder with tiny's transformer (192 wide, 4 layers)
  tiny/mel, small/mel         the first convolution initialised as a mel-spaced band-pass bank

Run:  .venv/bin/python bench/birth.py [--corpus synthetic|shared] [--seeds 2] [--pooling mean|mean+std]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS: dict[str, tuple[str, dict, str]] = {
    "tiny": ("tiny", {}, "random"),
    "small": ("small", {}, "random"),
    "small/tiny-convs": ("small", {"conv_first": 32, "conv_last": 128}, "random"),
    "tiny/small-convs": ("tiny", {"conv_first": 128, "conv_last": 384}, "random"),
    "small/tiny-transformer": ("small", {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
                                         "intermediate_size": 768}, "random"),
    "tiny/mel": ("tiny", {}, "mel"),
    "small/mel": ("small", {}, "mel"),
}


def network(preset: str, changes: dict, init: str, sample_rate: int, seed: int):
    import torch
    from transformers import Wav2Vec2ForPreTraining

    from tasks.model.config import build_config, conv_widths
    from tasks.model.frontend import plan_feature_encoder
    from tasks.model.frontend_init import initialise_frontend

    plan = plan_feature_encoder(sample_rate)
    overrides = {k: v for k, v in changes.items() if not k.startswith("conv_")}
    if "conv_first" in changes:
        overrides["conv_dim"] = conv_widths(changes["conv_first"], changes["conv_last"], len(plan.strides))
    config = build_config(preset, plan, overrides)
    torch.manual_seed(seed)
    model = Wav2Vec2ForPreTraining(config)
    config.frontend_init = init
    initialise_frontend(model, init)
    return model.eval()


def layer_features(model, audio: list[np.ndarray], pooling: str) -> dict[str, np.ndarray]:
    """Pooled vectors of the encoder's output ("cnn") and of every layer, per segment."""
    import torch

    from tasks.embedding.encode import embed_batch, pool
    from tasks.model.inputs import normalise

    out: dict[str, list[np.ndarray]] = {}
    layers = list(range(model.config.num_hidden_layers + 1))
    with torch.no_grad():
        for start in range(0, len(audio), 8):
            batch = audio[start : start + 8]
            for i, emb in enumerate(embed_batch(model, [str(j) for j in range(len(batch))], batch, layers,
                                                0.02, torch.device("cpu"))):
                cnn = model.wav2vec2.feature_extractor(torch.from_numpy(normalise(batch[i]))[None])[0].T.numpy()
                frames = {"cnn": cnn, **{f"layer {layer}": emb.layers[layer] for layer in layers}}
                for name, x in frames.items():
                    out.setdefault(name, []).append(np.concatenate([pool(x, how) for how in pooling.split("+")]))
    return {name: np.stack(v) for name, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["synthetic", "shared"], default="synthetic")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--pooling", default="mean", choices=["mean", "mean+std"])
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from learning import SHARED, ingest, make_synthetic, shared_labels
    from tasks.catalog.evaluations import labelled_segments
    from tasks.catalog.recordings import segment_refs
    from tasks.embedding.run import read_audio
    from tasks.evaluation.baselines import logmel_stats
    from tasks.evaluation.metrics import macro_f1, probe_predictions
    from tasks.workspace import Workspace, database

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="ceta2vec-birth-"))
    ws = Workspace.at(str(workdir / "ws"))
    synthetic = args.corpus == "synthetic"
    segment_seconds = 2.0 if synthetic else 4.0
    if synthetic:
        source = workdir / "audio"
        labels = make_synthetic(source, args.sample_rate, 12, 4, segment_seconds, (-6.0, 6.0), 0)
    else:
        source, labels = SHARED, shared_labels(workdir / "labels.csv")
    ingest(ws, source, labels, args.sample_rate, segment_seconds)
    with database.reading(ws) as conn:
        labelled = labelled_segments(conn, "call_type" if synthetic else "species", None)
        audio = read_audio(segment_refs(conn, ws, labelled.segment_ids))
    y, groups = labelled.labels, labelled.recordings

    def f1(x: np.ndarray) -> float:
        return macro_f1(probe_predictions(x, y, groups, 0))

    print(f"{args.corpus}: {len(y)} segments, {len(set(groups))} recordings; probe macro-F1 "
          f"(pooling {args.pooling}), mean over {args.seeds} seeds [min, max]")
    print(f"log-mel stats: {f1(np.stack([logmel_stats(a, args.sample_rate) for a in audio])):.3f}")
    for name in args.variants:
        preset, changes, init = VARIANTS[name]
        scores: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            for feature, x in layer_features(network(preset, changes, init, args.sample_rate, seed), audio,
                                             args.pooling).items():
                scores.setdefault(feature, []).append(f1(x))
        cells = [f"{f} {np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]" for f, v in scores.items()]
        print(f"{name:24s} " + "; ".join(cells), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
