"""What the filters and units respond to, on networks with a planted answer: a feature encoder whose
first layer is a known band-pass filterbank, units that fire on a 1 kHz tone and on a click train,
and attention heads built to be positional or content-driven. Real torch models throughout, at 8 kHz
(any rate works: nothing here assumes 16 kHz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from signals import click_train, noise, tone
from transformers import Wav2Vec2ForPreTraining

from tasks.model.config import build_config
from tasks.model.frontend import plan_feature_encoder
from tasks.report.attention import attention_maps, head_summary
from tasks.report.filterbank import frequency_responses
from tasks.report.maximise import activation_at, maximise
from tasks.report.network import Unit, _for_analysis, layer_frames, normalise_batch, random_twin
from tasks.report.saliency import gradient_saliency, occlusion_saliency, stft_for

RATE = 8000
# 250 Hz .. 3750 Hz, then 500 Hz, 1 and 2 kHz again (above that a 64-tap filter merges with its image past Nyquist)
LADDER = [125.0 * (2 + k) for k in range(29)] + [500.0, 1000.0, 2000.0]


def network(seed: int = 0, **overrides) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(seed)
    config = build_config("tiny", plan_feature_encoder(RATE), overrides={"num_hidden_layers": 1, **overrides})
    return _for_analysis(Wav2Vec2ForPreTraining(config), torch.device("cpu"))


def test_a_planted_band_pass_first_layer_peaks_at_its_centre_frequencies():
    plan = plan_feature_encoder(RATE)
    kernels = (64,) + tuple(plan.kernels[1:])  # a kernel long enough to be a sharp band-pass filter
    model = network(conv_kernel=kernels)
    conv = model.wav2vec2.feature_extractor.conv_layers[0].conv
    n = np.arange(64)
    with torch.no_grad():
        for c, f in enumerate(LADDER):
            conv.weight[c, 0] = torch.as_tensor(np.hanning(64) * np.cos(2 * np.pi * f * n / RATE) / 16)
        conv.bias.zero_()
    fb = frequency_responses(model, RATE)
    assert fb.bin_hz == pytest.approx(RATE / 2 / 128)
    assert len(fb.responses) == len(kernels) and fb.responses[0].shape == (32, 128)
    peaks = fb.peaks(0)
    assert np.all(np.abs(peaks - np.asarray(LADDER)) <= fb.bin_hz), list(zip(LADDER, peaks))
    # deeper layers are measured through the first: they respond, and only within 0..Nyquist
    assert all(r.shape[1] == 128 and np.isfinite(r).all() and r.max() > 0 for r in fb.responses[1:])
    db, order = fb.sorted_db(0)
    assert np.all(np.diff(peaks[order]) >= 0) and db.max() == 0


def test_the_random_twin_has_the_same_architecture_and_other_weights():
    model = network()
    twin = random_twin(model, seed=5)
    assert list(twin.config.conv_kernel) == list(model.config.conv_kernel)
    a, b = (m.wav2vec2.feature_extractor.conv_layers[0].conv.weight for m in (model, twin))
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.equal(b, random_twin(model, seed=5).wav2vec2.feature_extractor.conv_layers[0].conv.weight)


def planted_attention(t: int = 40, seed: int = 0) -> np.ndarray:
    """Head 0 attends two frames ahead (a fixed offset); head 1 attends to frames holding the same token
    as the query (content); head 2 spreads evenly."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    positional = np.exp(-4.0 * np.abs(j - i - 2))
    tokens = rng.integers(0, 4, t)
    content = np.where(tokens[None, :] == tokens[:, None], 1.0, 0.02) * rng.uniform(0.5, 1.5, t)[None, :]
    diffuse = np.ones((t, t)) + 0.01 * rng.random((t, t))
    heads = np.stack([positional, content, diffuse])
    return (heads / heads.sum(-1, keepdims=True))[None]


def test_a_head_built_to_attend_to_a_fixed_offset_is_classed_positional():
    rows = head_summary(planted_attention())
    assert [r["class"] for r in rows] == ["positional", "content", "diffuse"]
    assert rows[0]["favourite offset (frames)"] == 2 and rows[0]["offset R²"] > 0.9
    assert rows[1]["offset R²"] < 0.5


def test_attention_maps_of_a_real_network_are_per_layer_and_head():
    model = network(num_hidden_layers=2)
    maps = attention_maps(model, noise(1.0, RATE, 0.3))
    assert maps.shape[:2] == (2, model.config.num_attention_heads) and maps.shape[2] == maps.shape[3]
    assert np.allclose(maps.sum(-1), 1, atol=1e-4)
    assert {r["class"] for r in head_summary(maps)} <= {"positional", "content", "diffuse"}


@pytest.fixture(scope="module")
def planted_units():
    """A random 8 kHz network and k-means units of its layer 1 placed at the mean frame of a 1 kHz tone
    (the tone unit), of a click train with a click every frame (the click unit), and of rivals
    (other tones, noise): the tone unit fires most on a 1 kHz tone, the click unit on clicks."""
    model = network()
    hop = plan_feature_encoder(RATE).hop_samples
    signals = {f"{f} Hz": tone(f, 1.0, RATE, 0.5) for f in (250, 500, 1000, 2000, 3000)}
    signals["clicks"] = click_train(1.0, RATE, hop / RATE, 0.8)
    signals["noise"] = noise(1.0, RATE, 0.3, seed=1)
    units = {}
    with torch.no_grad():
        for i, (name, x) in enumerate(signals.items()):
            h = layer_frames(model, normalise_batch(torch.as_tensor(x[None])), {1})[1][0]
            units[name] = Unit("kmeans", i, 1, centroid=tuple(float(v) for v in h[2:-2].mean(0)))
    return model, units, signals


def spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    return np.fft.rfftfreq(len(x), 1 / RATE), power


def test_the_tone_units_maximiser_peaks_at_1_khz_and_the_click_units_is_broadband_and_impulsive(planted_units):
    model, units, signals = planted_units
    tone_unit, click_unit = units["1000 Hz"], units["clicks"]
    assert max(signals, key=lambda s: activation_at(model, tone_unit, signals[s])) == "1000 Hz"
    assert max(signals, key=lambda s: activation_at(model, click_unit, signals[s])) == "clicks"
    made = maximise(model, [tone_unit, click_unit], RATE, seconds=0.5, starts=3, steps=150, seed=0)
    tone_max, click_max = (m.audio.astype(np.float64) for m in made)
    f, p = spectrum(tone_max)
    assert abs(f[np.argmax(p)] - 1000) <= 100
    f, p = spectrum(click_max)
    cumulative = np.cumsum(p) / p.sum()
    central_80 = f[np.searchsorted(cumulative, 0.9)] - f[np.searchsorted(cumulative, 0.1)]
    assert central_80 > RATE / 4  # broadband: the middle 80% of its power spans more than half of 0..Nyquist
    kurtosis = np.mean((click_max - click_max.mean()) ** 4) / np.var(click_max) ** 2
    assert kurtosis > 10  # impulsive: a sine has 1.5, Gaussian noise 3
    # each maximiser excites its unit at least as much as the unit's own best real input
    assert made[0].activation >= activation_at(model, tone_unit, signals["1000 Hz"]) - 0.01
    assert made[1].activation >= activation_at(model, click_unit, signals["clicks"]) - 0.01


def test_the_maximiser_is_seeded_and_a_budget_stops_it(planted_units):
    model, units, _ = planted_units
    unit = units["1000 Hz"]
    a = maximise(model, [unit], RATE, seconds=0.25, starts=2, steps=5, seed=3)
    b = maximise(model, [unit], RATE, seconds=0.25, starts=2, steps=5, seed=3)
    c = maximise(model, [unit], RATE, seconds=0.25, starts=2, steps=5, seed=4)
    assert np.array_equal(a[0].audio, b[0].audio) and not np.array_equal(a[0].audio, c[0].audio)
    assert maximise(model, [unit], RATE, seconds=0.25, starts=2, steps=1000, budget_s=0.0, seed=3)[0].steps == 1


def tone_exemplar() -> tuple[np.ndarray, tuple[float, float]]:
    """1.2 s of quiet noise with the 1 kHz tone in [0.4, 0.8) s."""
    x = noise(1.2, RATE, 0.02, seed=7)
    x[int(0.4 * RATE):int(0.8 * RATE)] += tone(1000, 0.4, RATE, 0.5)
    return x, (0.4, 0.8)


def tone_frames(span: tuple[float, float]) -> tuple[int, int]:
    plan = plan_feature_encoder(RATE)
    hop, field = plan.hop_samples, plan.receptive_field_samples
    first = int(np.ceil(span[0] * RATE / hop))
    last = int((span[1] * RATE - field) // hop) + 1
    return first, last  # frames whose whole receptive field lies inside the tone


def test_occlusion_saliency_lies_on_the_planted_tone(planted_units):
    model, units, _ = planted_units
    x, span = tone_exemplar()
    stft = stft_for(RATE)
    sal = occlusion_saliency(model, x, units["1000 Hz"], tone_frames(span), stft)
    rows = np.flatnonzero((sal.band_edges_hz[1:] > 1000 * 0.9) & (sal.band_edges_hz[:-1] < 1000 * 1.1))
    columns = np.flatnonzero((sal.time_edges_s[1:] > span[0]) & (sal.time_edges_s[:-1] < span[1]))
    share = sal.positive_share(rows, columns)
    assert share >= 0.7, share
    # gradient x input: the mel band where the unit's first-order attribution is largest holds the tone
    grad = gradient_saliency(model, x, units["1000 Hz"], tone_frames(span), stft)
    top = int(np.argmax(np.abs(grad.values).sum(1)))
    assert grad.band_edges_hz[top] <= 1000 * 1.1 and grad.band_edges_hz[top + 1] >= 1000 * 0.9


def test_saliency_is_deterministic(planted_units):
    model, units, _ = planted_units
    x, span = tone_exemplar()
    stft = stft_for(RATE)
    a = occlusion_saliency(model, x, units["clicks"], tone_frames(span), stft)
    b = occlusion_saliency(model, x, units["clicks"], tone_frames(span), stft)
    assert np.array_equal(a.values, b.values)


def test_explain_writes_the_same_saliency_and_attention_figures_for_the_same_segment(tiny_workspace, tmp_path):
    from tasks.report.explain import explain_segment
    from tasks.workspace import database

    with database.reading(tiny_workspace) as conn:
        segment = conn.execute("SELECT segment_id FROM segments ORDER BY segment_id LIMIT 1").fetchone()[0]
    first = explain_segment(tiny_workspace, segment, output=tmp_path / "a")
    again = explain_segment(tiny_workspace, segment, output=tmp_path / "b")
    assert sorted(p.name for p in first) == ["attention-heads.png", "attention-heads.svg", "attention.png",
                                             "attention.svg", "saliency.png", "saliency.svg"]
    for a, b in zip(first, again):  # seeded and deterministic: the same inputs draw the same figures
        if a.suffix == ".png":
            assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(database.WorkspaceError, match="no segment 'nope'"):
        explain_segment(tiny_workspace, "nope", output=tmp_path / "c")
    with pytest.raises(database.WorkspaceError, match="not 99"):
        explain_segment(tiny_workspace, segment, layer=99, output=tmp_path / "c")
