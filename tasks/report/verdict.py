"""The report's first words: did the model learn anything, and does it beat the baselines?

Two sources, each read beside its chance or baseline level so that noise is never presented as a
finding: the training metrics at the embedded checkpoint (masked-prediction accuracy vs 1/(K+1),
contrastive loss vs ln(K+1), codebook perplexity vs its maximum) and the `evaluate` scorecard (the
best layer's 5-NN macro-F1 vs log-mel, MFCC and random-weight features, with bootstrap intervals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.names import file_stem
from tasks.model.health import interval_means, training_health
from tasks.model.objectives import masked_task

SCORE_METRIC = "knn5_macro_f1"
SCORE_NAME = "5-NN macro-F1"
TABLE_METRICS = {"knn5_macro_f1": "5-NN macro-F1", "probe_macro_f1": "linear-probe macro-F1",
                 "probe_pooled_macro_f1": "probe macro-F1, pooling chosen in folds",
                 "mean_average_precision": "mean average precision"}
BASELINES = ("log-mel stats", "MFCC stats", "random weights (best layer)")
HEADLINE_BASELINE = "log-mel stats"  # the hand-made features a learned representation must beat first


def scorecard_key(label_column: str) -> str:
    """The scorecard figure's name in the report's figures/ (the evaluate flow writes it there too)."""
    return "evaluate-" + file_stem(label_column)


@dataclass
class Verdict:
    level: str  # "good" (beats a baseline), "warn" (learning, no clear win or no evaluation), "bad" (not learning)
    headline: str
    details: list[str] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)  # metric, value, chance or limit, reading
    scorecard: list[dict] = field(default_factory=list)  # features x metrics, intervals, chance row
    figure: object | None = None  # FigureRef of the scorecard, drawn into the report's figures/
    health: dict = field(default_factory=dict)  # training_health() at the embedded checkpoint
    best_layer: int | None = None


def _num(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def training_verdict(metrics: dict[str, np.ndarray], model_config: dict, model_id: str,
                     step: int | None = None) -> dict:
    """training_health() over the last logged steps up to the embedded checkpoint's step."""
    keep = np.ones(len(metrics.get("step", [])), bool)
    if step is not None and keep.any():
        keep &= metrics["step"] <= step
    rows = []
    for i in np.flatnonzero(keep):
        row = {k: float(metrics[k][i]) for k in ("loss", "contrastive_loss", "diversity_loss", "accuracy",
                                                 "unused_code_share") if k in metrics and np.isfinite(metrics[k][i])}
        if "perplexity" in metrics and metrics["perplexity"].shape[1]:
            row["perplexity"] = [float(v) for v in metrics["perplexity"][i] if np.isfinite(v)] or None
        rows.append(row)
    groups = int(model_config.get("num_codevector_groups") or (metrics["perplexity"].shape[1]
                                                               if "perplexity" in metrics else 1) or 1)
    task = masked_task(model_config)
    return training_health(interval_means(rows), task.alternatives, int(model_config.get("num_codevectors_per_group") or 320),
                           groups, model_id, task.loss_at_chance, task.loss_name, task.chance_note)


def training_rows(health: dict, used_codes: list[tuple[str, int, int]]) -> list[dict]:
    """Each training figure beside the level it means nothing at. used_codes: (group name, used, size)."""
    chance = health["chance"]
    accuracy, loss, perplexity = health["accuracy"], health["loss"], health["perplexity"]
    rows = [
        {"measure": "masked-prediction accuracy", "value": _round(accuracy, 3),
         "chance or limit": f"chance {chance:.3f} (1 in {round(1 / chance)})",
         "reading": "—" if accuracy is None else
         ("at chance (below twice chance)" if accuracy < 2 * chance else f"{accuracy / chance:.1f} times chance")},
        {"measure": health.get("loss_name", "contrastive loss"), "value": _round(loss, 3),
         "chance or limit": f"{health['loss_at_chance']:.3f} = {health.get('chance_note', 'ln(K+1) at chance')}",
         "reading": "—" if loss is None else ("no lower than at chance" if loss >= 0.97 * health["loss_at_chance"]
                                              else f"{health['loss_at_chance'] - loss:.2f} below chance")},
        {"measure": "codebook perplexity (codes in effective use)", "value": _round(perplexity, 1),
         "chance or limit": f"at most {health['max_perplexity']:.0f}",
         "reading": "—" if perplexity is None else f"{100 * perplexity / health['max_perplexity']:.0f}% of the maximum"},
    ]
    if health.get("code_usage") is not None:
        rows.append({"measure": "codes used in the last training batches", "value": f"{100 * health['code_usage']:.0f}%",
                     "chance or limit": "100% when every code is used", "reading": ""})
    for name, used, size in used_codes:
        rows.append({"measure": f"codes used by the embedded frames, {name}", "value": f"{used} of {size}",
                     "chance or limit": f"{size} when every code is used",
                     "reading": f"{100 * used / max(1, size):.0f}%"})
    return rows


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def chance_scores(class_counts: dict[str, int]) -> dict[str, float]:
    """What labels alone give: macro-F1 of always answering the commonest label, and the mean average
    precision of a random ranking (each query's own class prevalence, averaged over queries)."""
    counts = np.asarray([c for c in class_counts.values() if c > 0], np.float64)
    if not len(counts):
        return {}
    p = counts / counts.sum()
    commonest_f1 = 2 * p.max() / (1 + p.max()) / len(p)
    return {"knn5_macro_f1": commonest_f1, "probe_macro_f1": commonest_f1, "probe_pooled_macro_f1": commonest_f1,
            "mean_average_precision": float((p ** 2).sum())}


def compare(best: dict, baseline: dict, metric: str = SCORE_METRIC) -> tuple[str, float]:
    """('beats' | 'overlaps' | 'loses', difference) of the best layer against one baseline."""
    v, lo, _ = best["metrics"][metric]
    b, _, b_hi = baseline["metrics"][metric]
    if v > b and np.isfinite(lo) and np.isfinite(b_hi) and lo > b_hi:
        return "beats", v - b
    if v > b:
        return "overlaps", v - b
    return "loses", v - b


def scorecard_statements(rows: list[dict], label_column: str, class_counts: dict[str, int] | None = None
                         ) -> tuple[str, list[str], int | None]:
    """(headline on log-mel, one sentence per baseline, best layer) in plain words; a best layer no
    better than always answering the commonest label wins nothing, whatever the baselines score."""
    layers = [r for r in rows if r["kind"] == "model" and r["features"].startswith("layer ")
              and SCORE_METRIC in r["metrics"] and np.isfinite(r["metrics"][SCORE_METRIC][0])]
    if not layers:
        return "", [], None
    best = max(layers, key=lambda r: r["metrics"][SCORE_METRIC][0])
    by_name = {r["features"]: r for r in rows if r["kind"] == "baseline"}
    v = best["metrics"][SCORE_METRIC][0]
    sentences, headline = [], ""
    for name in BASELINES:
        base = by_name.get(name)
        if base is None or SCORE_METRIC not in base["metrics"]:
            continue
        outcome, diff = compare(best, base)
        b = base["metrics"][SCORE_METRIC][0]
        short = name.replace(" stats", "").replace(" (best layer)", "")
        if outcome == "beats":
            text = (f"Layer {best['layer']} beats {short} by {diff:.2f} {SCORE_NAME} "
                    f"({v:.2f} vs {b:.2f}; the intervals do not overlap).")
        elif outcome == "overlaps":
            text = (f"Layer {best['layer']} is above {short} by {diff:.2f} {SCORE_NAME} ({v:.2f} vs {b:.2f}), "
                    "but the intervals overlap: not a clear win.")
        else:
            text = f"Layer {best['layer']} does not beat {short}: {SCORE_NAME} {v:.2f} vs {b:.2f}."
        sentences.append(text)
        if name == HEADLINE_BASELINE:
            headline = text
    headline = headline or (sentences[0] if sentences else f"Best layer {best['layer']}: {SCORE_NAME} {v:.2f}.")
    trivial = chance_scores(class_counts or {}).get(SCORE_METRIC)
    if trivial is not None and v <= trivial:
        headline = (f"Layer {best['layer']}, the best, scores {SCORE_NAME} {v:.2f}: no better than always answering "
                    f"the commonest label ({trivial:.2f}).")
        sentences.insert(0, headline)
    return f"For '{label_column}': {headline[0].lower()}{headline[1:]}", sentences, int(best["layer"])


def scorecard_table(rows: list[dict], class_counts: dict[str, int]) -> list[dict]:
    """Every layer and baseline with 95% bootstrap intervals, and what the labels alone score."""
    def cell(row: dict, metric: str) -> str:
        if metric not in row["metrics"]:
            return "—"
        v, lo, hi = row["metrics"][metric]
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{v:.3f}"

    shown = [r for r in rows if r["features"].startswith("layer ") or r["features"] in BASELINES + ("all layers",)]
    shown.sort(key=lambda r: (r["kind"] != "model", r["layer"] if r["layer"] is not None else 10**6,
                              BASELINES.index(r["features"]) if r["features"] in BASELINES else 0))
    table = [{"features": r["features"] if r["kind"] == "model" else f"baseline: {r['features']}",
              **{name: cell(r, metric) for metric, name in TABLE_METRICS.items()}} for r in shown]
    chance = chance_scores(class_counts)
    if chance:
        table.append({"features": "chance: always the commonest label (F1), random ranking (precision)",
                      **{name: f"{chance[metric]:.3f}" for metric, name in TABLE_METRICS.items()}})
    return table


def build_verdict(health: dict | None, used_codes: list[tuple[str, int, int]],
                  scorecard: tuple[str, list[dict], dict] | None) -> Verdict:
    """The verdict section: training first (a model at chance makes every later finding moot), then the scorecard."""
    verdict = Verdict("warn", "")
    if health is not None:
        verdict.health = health
        verdict.training = training_rows(health, used_codes)
        verdict.details.append(f"Training: {health['sentence']}.")
    headline, sentences, best = ("", [], None)
    if scorecard is not None:
        column, rows, counts = scorecard
        headline, sentences, best = scorecard_statements(rows, column, counts)
        verdict.scorecard = scorecard_table(rows, counts)
        verdict.best_layer = best
        verdict.details += sentences
    state = health["verdict"] if health else "unknown"
    if state in ("at chance", "collapsed", "diverged"):
        verdict.level = "bad"
        why = {"at chance": "is at chance", "collapsed": "has a collapsed codebook",
               "diverged": "diverged (a loss that is not a number)"}[state]
        verdict.headline = f"This model {why}: the maps and units below are not yet meaningful."
    elif state == "unknown":
        verdict.headline = ("No training metrics for this model: whether it learned cannot be told. "
                            + (headline or "No evaluation against labels either (run ceta2vec evaluate)."))
    elif headline:
        verdict.level = "good" if " beats " in headline else "warn"
        verdict.headline = headline if verdict.level == "good" else f"Training is above chance. {headline}"
    else:
        verdict.headline = ("Training is above chance; there is no evaluation against labels yet, so whether the "
                            "representation beats hand-made features is not known (run `ceta2vec evaluate`).")
    said = verdict.headline.lower()
    verdict.details = [d for d in verdict.details if d.lower().rstrip(".") not in said]  # no sentence twice
    return verdict


def report_title(model_id: str, verdict: Verdict) -> str:
    """'What X learned' only for a model that learned something a baseline did not."""
    if verdict.level == "good":
        return f"What {model_id} learned"
    state = verdict.health.get("verdict") if verdict.health else None
    if state in ("at chance", "collapsed", "diverged"):
        return f"Report of {model_id}: {state}, no finding yet"
    return f"Report of {model_id}"
