"""The report's "What the filters and units respond to": the learned filterbank, attention, and per
atlas unit its maximising input (a WAV with its spectrogram) and a saliency map of its best exemplar.

The network is the embedded checkpoint's export; its random-weight twin (seeded) is drawn beside it,
so learned structure can be told from what the architecture gives anyway. Activation maximisation and
saliency share one time budget (`--features-budget`): units beyond it keep their page without them,
which says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image
import numpy as np

from tasks.model.device import pick_device
from tasks.model.inputs import normalise
from tasks.report.attention import attention_maps, class_counts, head_summary
from tasks.report.content import ReportSection
from tasks.report.figures_features import (
    attention_figure,
    filterbank_figure,
    filterbank_layers_figure,
    head_class_figure,
    maximiser_gallery,
    saliency_figure,
)
from tasks.report.filterbank import audio_spectrum, frequency_responses
from tasks.report.maximise import Maximised, activation_at, maximise
from tasks.report.network import Unit, load_network, random_twin, sample_rate_of, top_channels
from tasks.report.saliency import gradient_saliency, occlusion_saliency, stft_for
from tasks.report.spectrograms import SPECTROGRAM_CMAP, MelConfig, display_range, log_mel, write_clip

MAX_SECONDS = 0.4  # length of a maximising input
MAX_STARTS = 2
MAX_STEPS = 200
CLIP_S = 0.3  # audio either side of an exemplar frame for its saliency and activation
REPORT_BANDS_PER_PATCH, REPORT_PATCH_S = 8, 0.06  # coarser patches than the default: 8 x 10 per clip
ATTENTION_MAX_S = 10.0
TOP_CHANNELS = 4
MAXIMISE_SHARE = 0.6  # of each inventory's share of the budget; the rest goes to saliency
MAIN_SHARE = 0.6  # of the budget, for the main inventory's units
CHANNEL_SHARE = 0.1  # kept for the top channels of the main layer


@dataclass
class UnitExtras:
    """What a unit page adds: its maximising input and a saliency map (paths relative to the report)."""

    wav: str = ""
    png: str = ""
    activation: float | None = None
    exemplar_activation: float | None = None
    steps: int = 0
    saliency: str = ""
    note: str = ""


def unit_of(inventory, unit: int, centroids: np.ndarray | None) -> Unit | None:
    if inventory.source == "codevector":
        return Unit("code", unit, group=inventory.group)
    if centroids is None or unit >= len(centroids):
        return None
    return Unit("kmeans", unit, inventory.layer, centroid=tuple(float(v) for v in centroids[unit]))


def clip_around(samples: np.ndarray, frame: int, mel: MelConfig) -> tuple[np.ndarray, int]:
    """CLIP_S either side of a model frame, starting on a frame boundary; and the frame's index in the clip."""
    back = int(round(CLIP_S / mel.frame_seconds))
    first = max(0, frame - back)
    start = first * mel.hop
    stop = min(len(samples), (frame + back) * mel.hop + mel.receptive_field)
    return samples[start:stop], frame - first


def exemplar_activation(model, unit: Unit, clips: list[tuple[np.ndarray, int]]) -> float | None:
    """The unit's highest activation at its exemplars' frames, the clips batched (padded at the end)."""
    import torch

    from tasks.report.network import activations

    if not clips:
        return None
    longest = max(len(c) for c, _ in clips)
    x = np.zeros((len(clips), longest), np.float32)
    for i, (c, _) in enumerate(clips):
        x[i, :len(c)] = c
    device = next(model.parameters()).device
    with torch.no_grad():
        a = activations(model, torch.as_tensor(x, device=device), [unit] * len(clips)).cpu().numpy()
    return float(max(a[i, min(f, a.shape[1] - 1)] for i, (_, f) in enumerate(clips)))


@dataclass
class FeatureRun:
    ws_root: Path
    export_dir: Path
    budget_s: float
    seed: int
    out_dir: Path
    mel: MelConfig
    inventories: int  # atlas inventories that will ask for unit extras
    say: object = None
    network: object = None
    twin: object = None
    error: str | None = None
    spent: float = 0.0
    asked: int = 0
    gallery: list[tuple[str, Maximised, float | None]] = field(default_factory=list)
    sample_audio: list[np.ndarray] = field(default_factory=list)
    attention_audio: tuple[str, np.ndarray] | None = None

    def load(self) -> bool:
        if self.network is None and self.error is None:
            try:
                self.network = load_network(self.export_dir, pick_device("auto"))
                self.twin = random_twin(self.network, self.seed)
            except (OSError, ValueError) as exc:
                self.error = f"the checkpoint could not be loaded ({' '.join(str(exc).split())[:300]})"
        return self.network is not None

    @property
    def sample_rate(self) -> int:
        return sample_rate_of(self.network, self.mel.sample_rate)

    def remaining(self) -> float:
        return max(0.0, self.budget_s - self.spent)

    def unit_extras(self, inventory, atlas, audio: dict[str, np.ndarray], centroids: np.ndarray | None
                    ) -> dict[int, UnitExtras]:
        """Maximising inputs of every atlas unit (batched) and saliency maps while the budget lasts."""
        self.asked += 1
        if audio and not self.sample_audio:
            self.sample_audio = list(audio.values())[:64]
        if not self.load():
            return {}
        if self.attention_audio is None:
            for unit in atlas.units:
                if unit.exemplars and unit.exemplars[0].segment_id in audio:
                    sid = unit.exemplars[0].segment_id
                    self.attention_audio = (sid, audio[sid][: int(ATTENTION_MAX_S * self.mel.sample_rate)])
                    break
        # the main inventory (asked first) gets most of the budget; the codevector groups share the rest
        left = max(1, self.inventories - self.asked + 1)
        share = self.remaining() * (MAIN_SHARE if self.asked == 1 and left > 1 else 1 / left) * (1 - CHANNEL_SHARE)
        units = {u.unit: unit_of(inventory, u.unit, centroids) for u in atlas.units}
        units = {k: v for k, v in units.items() if v is not None}
        extras = {k: UnitExtras(note="") for k in units}
        started = time.perf_counter()
        if share > 0 and units:
            made = maximise(self.network, list(units.values()), self.sample_rate, MAX_SECONDS, MAX_STARTS, MAX_STEPS,
                            budget_s=MAXIMISE_SHARE * share, seed=self.seed)
            folder = self.out_dir / "media" / "features" / inventory.key
            for (key, unit), m in zip(units.items(), made):
                stem = folder / f"unit{key}-max"
                write_clip(stem.with_suffix(".wav"), m.audio, self.sample_rate)
                spec = log_mel(normalise(m.audio), self.mel)
                vmin, vmax = display_range([spec])
                matplotlib.image.imsave(stem.with_suffix(".png"), np.repeat(spec, 3, axis=0), cmap=SPECTROGRAM_CMAP,
                                        vmin=vmin, vmax=vmax, origin="lower")
                extras[key] = UnitExtras(stem.with_suffix(".wav").relative_to(self.out_dir).as_posix(),
                                         stem.with_suffix(".png").relative_to(self.out_dir).as_posix(),
                                         m.activation, None, m.steps)
        stft = stft_for(self.sample_rate)
        for u in atlas.units:
            if u.unit not in units:
                continue
            best = exemplar_activation(self.network, units[u.unit],
                                       [clip_around(audio[ex.segment_id], ex.frame, self.mel)
                                        for ex in u.exemplars if ex.segment_id in audio])
            extras[u.unit].exemplar_activation = best
            if extras[u.unit].png:
                self.gallery.append((f"{inventory.name}, unit {u.unit}", made[list(units).index(u.unit)], best))
            elapsed = time.perf_counter() - started
            if elapsed >= share or not u.exemplars or u.exemplars[0].segment_id not in audio:
                extras[u.unit].note = ("no saliency map: the --features-budget was spent before this unit"
                                       if elapsed > share else "no exemplar audio for a saliency map")
                continue
            ex = u.exemplars[0]
            clip, frame = clip_around(audio[ex.segment_id], ex.frame, self.mel)
            frames = (frame, frame + 1)
            occlusion = occlusion_saliency(self.network, clip, units[u.unit], frames, stft, REPORT_BANDS_PER_PATCH,
                                           REPORT_PATCH_S)
            gradient = gradient_saliency(self.network, clip, units[u.unit], frames, stft)
            fig = saliency_figure(log_mel(normalise(clip), self.mel), self.mel, occlusion, gradient,
                                  f"{inventory.name}, unit {u.unit}: where its best exemplar makes it fire", frames)
            path = self.out_dir / "figures" / "units" / f"{inventory.key}-unit{u.unit}-saliency.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110)
            import matplotlib.pyplot as plt

            plt.close(fig)
            extras[u.unit].saliency = path.relative_to(self.out_dir).as_posix()
        self.spent += time.perf_counter() - started
        return extras

    def section(self, figures, model_id: str, main_layer: int, warning: str | None) -> ReportSection:
        intro = ("What the network's filters, attention heads and units respond to, drawn the way the features of "
                 "image networks are: the frequency response of every feature-encoder channel, the attention of "
                 "every head, and for each atlas unit the input that excites it most (on its page, with a "
                 "saliency map of where its best exemplar makes it fire). The same architecture with random "
                 "weights is drawn beside the trained one: only what differs from it was learned.")
        if warning:
            intro = f"{warning}\n\n{intro}"
        if not self.load():
            return ReportSection("features", "What the filters and units respond to",
                                 f"{intro}\n\nNot drawn: {self.error}.")
        refs, tables = [], []
        started = time.perf_counter()
        trained, random = (frequency_responses(m, self.sample_rate) for m in (self.network, self.twin))
        spectrum = audio_spectrum(self.sample_audio, self.sample_rate, trained.freqs)
        refs.append(figures.add(
            filterbank_figure(trained, random, spectrum, model_id), "filterbank", "The learned filterbank",
            "Each row of the middle panels is one channel of the first convolution layer, its response to pure tones "
            f"from 0 to {self.sample_rate / 2000:.1f} kHz (bright: near its peak), channels sorted by the frequency "
            "of their peak. Beside it: the mel filterbank, and the same layer with random weights. A learned "
            "filterbank tiles the band where the audio has energy (right: where the channels of every conv layer "
            "peak, against the power spectrum of the workspace's audio, dotted).", started))
        started = time.perf_counter()
        refs.append(figures.add(
            filterbank_layers_figure(trained, random, model_id), "filterbank-layers",
            "Frequency responses of every feature-encoder layer",
            "Every conv layer, measured by driving the whole encoder below it with tones: trained above, random "
            "weights below. Deeper layers of a trained encoder usually respond to bands rather than single "
            "frequencies; where the two rows look alike, the layer has learned little about frequency.", started))
        if self.attention_audio is not None:
            sid, clip = self.attention_audio
            started = time.perf_counter()
            maps = attention_maps(self.network, clip)
            summary = head_summary(maps)
            twin_summary = head_summary(attention_maps(self.twin, clip))
            counts, twin_counts = class_counts(summary), class_counts(twin_summary)
            refs.append(figures.add(
                attention_figure(maps, summary, f"Attention of {model_id} over segment {sid} "
                                                f"({len(clip) / self.mel.sample_rate:.1f} s)"),
                "attention-maps", "Attention per layer and head",
                "One map per layer (rows) and head (columns): each row of a map is a query frame, dark where it "
                "attends. A diagonal stripe is a positional head (it looks a fixed number of frames away whatever "
                "the sound); vertical stripes or blocks that follow the sound are content heads. Each title gives "
                "the head's class and offset R², the share of its attention explained by the offset alone.",
                started))
            started = time.perf_counter()
            refs.append(figures.add(
                head_class_figure(summary, twin_summary, model_id), "attention-heads",
                "Positional, content and diffuse heads",
                f"Each head of the trained model (dots: {counts['positional']} positional, {counts['content']} "
                f"content, {counts['diffuse']} diffuse) and of the random twin (crosses: "
                f"{twin_counts['positional']} positional, {twin_counts['content']} content, "
                f"{twin_counts['diffuse']} diffuse) on the same segment. Heads above the dashed line attend by "
                "offset alone; a model whose heads are all positional or diffuse does not use the audio.", started))
            tables.append([{"model": model_id, **r} for r in summary] + [{"model": "random weights", **r}
                                                                           for r in twin_summary])
        if main_layer > 0 and self.sample_audio:
            channels = top_channels(self.network, self.sample_audio[:16], main_layer, TOP_CHANNELS)
            units = [Unit("channel", c, main_layer) for c in channels]
            started = time.perf_counter()
            made = maximise(self.network, units, self.sample_rate, MAX_SECONDS, MAX_STARTS, MAX_STEPS,
                            budget_s=self.remaining(), seed=self.seed)
            self.spent += time.perf_counter() - started
            self.gallery += [(u.label, m, max(activation_at(self.network, u, a) for a in self.sample_audio[:16]))
                             for u, m in zip(units, made)]
        if self.gallery:
            started = time.perf_counter()
            shown = self.gallery[:24]
            refs.append(figures.add(
                maximiser_gallery([(title.replace("k-means units of ", "").replace("quantizer codevectors, ", ""),
                                    m.spectrogram) for title, m, _ in shown], self.sample_rate, MAX_SECONDS),
                "maximising-inputs", "Inputs that excite each unit most",
                "For each unit, the sound optimised to make it fire (a spectrogram with fixed random phase, several "
                "seeded starts, the best kept). A band, a sweep or a train of clicks is what the unit listens for; "
                "smooth noise means the unit prefers nothing in particular. Each unit's page plays it. The table "
                "compares its activation with the unit's best real exemplar.", started))
            tables.append([{"unit": title, "activation of the maximising input": round(m.activation, 4),
                            "best real exemplar (or clip)": None if best is None else round(best, 4),
                            "optimiser steps": m.steps} for title, m, best in self.gallery])
        return ReportSection(
            "features", "What the filters and units respond to",
            intro + f"\n\nActivation: minus the mean squared distance to a k-means centroid, a code's logit, a "
            f"channel's value. Maximisation and saliency took {self.spent:.0f} s of the {self.budget_s:.0f} s "
            "`--features-budget`.", refs, tables=tables)
