"""What did one change of the recipe buy? Two trained bench workspaces, scored on the same segments, paired.

Takes two workspaces that `bench/learning.py --workdir` kept (the same corpus and seed, so the same
segments and labels) and scored (`--rescore` embeds their latest checkpoints with every pooling),
and prints the headline metric of each one's best layer and of all layers, with the difference B - A
and a paired bootstrap interval over recordings: the same resampled recordings score both, so the
interval is of the lever's effect, not of two independent numbers.

Run:  .venv/bin/python bench/lever.py WORKDIR_A WORKDIR_B [--metric probe_pooled_macro_f1] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_predictions(workdir: Path, label_column: str, metric: str, seed: int):
    """(labelled set, {feature name: predictions}) of the latest embedded bench checkpoint: its best
    layer (by `metric`, on the scored data, as bench/learning.py picks it) and all layers."""
    from learning import FeatureSet, metric_on, predictions
    from tasks.catalog.evaluations import labelled_segments
    from tasks.evaluation.run import all_layers_options, model_pooling_options
    from tasks.workspace import Workspace, database

    ws = Workspace.at(str(workdir / "ws"))
    with database.reading(ws) as conn:
        model_id, layers = conn.execute(
            "SELECT model_id, layers FROM embedding_models WHERE run = 'bench' ORDER BY chunk DESC LIMIT 1").fetchone()
        labelled = labelled_segments(conn, label_column, None)
        embedded = {r[0] for r in conn.execute(
            "SELECT DISTINCT segment_id FROM embedded_segments WHERE model_id = ?", [model_id]).fetchall()}
        labelled = labelled.restricted_to(embedded)
        per_layer = {layer: model_pooling_options(conn, model_id, layer, labelled.segment_ids) for layer in range(layers)}
    everything = np.arange(len(labelled.labels))
    predicted = {f"layer {layer}": predictions(metric, FeatureSet(o["mean"], o), labelled, seed)
                 for layer, o in per_layer.items()}
    best = max(predicted, key=lambda name: metric_on(metric, predicted[name], everything))
    together = all_layers_options(list(per_layer.values()))
    return model_id, labelled, {"best layer": (best, predicted[best]),
                                "all layers": ("all layers", predictions(metric, FeatureSet(together["mean"], together),
                                                                         labelled, seed))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--label-column", default="call_type")
    parser.add_argument("--metric", default="probe_pooled_macro_f1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()

    from learning import _ci, metric_on, paired_margin

    model_a, labelled_a, a = best_predictions(Path(args.a), args.label_column, args.metric, args.seed)
    model_b, labelled_b, b = best_predictions(Path(args.b), args.label_column, args.metric, args.seed)
    if labelled_a.segment_ids != labelled_b.segment_ids:
        raise SystemExit("the two workspaces hold different segments: pair trials of the same corpus and seed")
    everything = np.arange(len(labelled_a.labels))
    print(f"A {args.a} ({model_a})\nB {args.b} ({model_b})\n{args.metric}, paired bootstrap over recordings:")
    for row in ("best layer", "all layers"):
        (name_a, pa), (name_b, pb) = a[row], b[row]
        effect = paired_margin(args.metric, pb, pa, labelled_a, args.seed, args.bootstrap)
        print(f"  {row}: A {name_a} {metric_on(args.metric, pa, everything):.3f}, B {name_b} "
              f"{metric_on(args.metric, pb, everything):.3f}; B - A {_ci(effect)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
