"""The recipe's levers, each checked on a case whose answer is known: data2vec targets and the EMA
teacher, activity scores and activity-weighted crops, the mel front end, and the probe whose
pooling is chosen inside the training folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quick_ingest import ingest_quick
from signals import noise, sweep, tone, write
from test_training import fresh_spec

from tasks.audio.activity import crop_start, crop_weights, recording_activity
from tasks.evaluation.metrics import grouped_folds, pooled_probe_predictions, scorecard
from tasks.model.frontend_init import band_edges, initialise_frontend, sinc_bank
from tasks.model.objectives import masked_task
from tasks.training import data2vec
from tasks.training.activity import ensure_activity
from tasks.training.data import ActivitySampling, SegmentIndex, epoch_order
from tasks.training.loop import Schedule, build_trainer, restore_state
from tasks.training.run import train_chunk
from tasks.workspace import Workspace, database

RATE = 8000


# ---------------------------------------------------------------- data2vec


def test_the_target_is_the_instance_normalised_mean_of_the_top_k_layers():
    rng = np.random.default_rng(0)
    layers = [torch.from_numpy(rng.normal(3.0 * i, 1.0 + i, (2, 7, 4))).float() for i in range(4)]
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 5:] = False  # padding never enters a row's statistics

    def norm(x: np.ndarray) -> np.ndarray:  # per row and channel over its valid frames, as numpy does it
        return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)

    target = data2vec.average_of_top(layers, valid, k=2).numpy()
    for row, n in ((0, 7), (1, 5)):
        top = [layers[i][row, :n].double().numpy() for i in (2, 3)]
        expected = norm((norm(top[0]) + norm(top[1])) / 2)
        np.testing.assert_allclose(target[row, :n], expected, rtol=1e-4, atol=1e-4)
    # predicting every channel's crop mean (zeros) scores the chance line exactly
    assert float((target[0] ** 2).mean()) == pytest.approx(1.0, abs=1e-3)


def test_the_ema_update_and_its_decay_follow_the_horizon():
    assert data2vec.ema_decay(0, 200) == pytest.approx(1 - 1 / 10)  # short runs: the floor memory
    assert data2vec.ema_decay(10_000, 200) == pytest.approx(1 - 1 / 20)
    assert data2vec.ema_decay(0, 400_000) == pytest.approx(0.999)  # data2vec BASE's own schedule
    assert data2vec.ema_decay(30_000, 400_000) == pytest.approx(0.9999)
    decays = [data2vec.ema_decay(s, 4000) for s in range(0, 4000, 50)]
    assert decays == sorted(decays)

    from transformers import Wav2Vec2ForPreTraining

    from tasks.model.config import build_config
    from tasks.model.frontend import plan_feature_encoder

    config = build_config("tiny", plan_feature_encoder(RATE), {"num_hidden_layers": 1, "pretrain_targets": "data2vec"})
    torch.manual_seed(0)
    start = Wav2Vec2ForPreTraining(config)
    torch.manual_seed(1)
    student = Wav2Vec2ForPreTraining(config)
    teacher = data2vec.make_teacher(start)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    before = [p.detach().clone() for p in teacher.parameters()]
    data2vec.ema_update(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.wav2vec2.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s, rtol=0, atol=1e-6)


def test_data2vec_trains_the_same_network_resumes_bit_identically_and_exports_the_student(tmp_path):
    folder = tmp_path / "rec"
    for i in range(3):
        x = noise(4.0, RATE, 0.05, seed=i)
        x[4000:8000] += tone(600 + 300 * i, 0.5, RATE, 0.5)
        write(folder / f"r{i}.wav", x, RATE, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, folder, segment_seconds=2.0)
    options = dict(targets="data2vec", steps_per_chunk=3, chunks=2)
    spec, index = fresh_spec(ws, run="d2v", **options)
    assert masked_task(spec.model_config()).loss_name == "squared error per channel"
    first = train_chunk(spec, index)
    assert all(np.isfinite(m.loss) for m in first.metrics)
    second = train_chunk(spec, index)

    # the same two chunks in one go (a fresh run): identical losses and teacher
    twin, twin_index = fresh_spec(ws, run="d2v-twin", **{**options, "steps_per_chunk": 6, "chunks": 1})
    straight = train_chunk(twin, twin_index)
    assert [m.loss for m in first.metrics + second.metrics] == [m.loss for m in straight.metrics]
    saved = torch.load(second.checkpoint.path / "state.pt", map_location="cpu", weights_only=False)
    other = torch.load(straight.checkpoint.path / "state.pt", map_location="cpu", weights_only=False)
    assert saved["teacher"].keys() == other["teacher"].keys()
    assert all(torch.equal(saved["teacher"][k], other["teacher"][k]) for k in saved["teacher"])
    # the teacher moved away from the student it started as, and is not the student now
    student = {k.removeprefix("wav2vec2.encoder."): v for k, v in saved["model"].items() if k.startswith("wav2vec2.encoder.")}
    assert any(not torch.equal(student[k], saved["teacher"][k]) for k in saved["teacher"])

    # the export is a plain wav2vec 2.0 network
    from transformers import Wav2Vec2Model

    exported = Wav2Vec2Model.from_pretrained(second.checkpoint.path / "hf")
    assert exported.config.pretrain_targets == "data2vec"

    # a checkpoint without a teacher cannot silently continue as data2vec
    state = build_trainer(spec.model_config(), spec.settings, Schedule(spec.settings, spec.horizon), torch.device("cpu"))
    saved.pop("teacher")
    path = tmp_path / "no-teacher.pt"
    torch.save(saved, path)
    with pytest.raises(ValueError, match="no EMA teacher"):
        restore_state(state, torch.load(path, weights_only=False))


# ---------------------------------------------------------------- activity


def test_activity_ranks_segments_with_calls_above_plain_noise_and_tolerates_silence():
    rng = np.random.default_rng(3)
    segments, called = [], {1, 4, 7}
    for i in range(9):
        x = rng.normal(0, 0.05, 2 * RATE)
        if i in called:
            x[4000:7000] += tone(900 + 200 * i, 3000 / RATE, RATE, 0.08)  # below the noise's broadband level
        segments.append(x.astype(np.float32))
    segments.append(np.zeros(2 * RATE, np.float32))  # silence
    nan = segments[0].copy()
    nan[100:200] = np.nan
    segments.append(nan)
    scores = recording_activity(segments, RATE)
    assert all(np.isfinite(scores))
    ranked = np.argsort(scores)[::-1]
    assert set(ranked[:3]) == called
    assert min(scores[i] for i in called) > max(scores[i] for i in range(11) if i not in called) + 3.0


def test_crop_weights_keep_a_floor_share_and_favour_activity():
    w = crop_weights(np.array([0.0, 0.0, 20.0, np.nan]), temperature_db=4.0, floor_share=0.25)
    assert w.sum() == pytest.approx(1.0)
    assert w[2] > 0.75 and min(w) >= 0.25 / 4
    assert w[3] == pytest.approx(w[0])  # unknown activity counts as none


def test_activity_sampling_visits_active_segments_more_and_stays_a_function_of_the_seed():
    n = 40
    activity = np.zeros(n)
    activity[:4] = 24.0
    index = SegmentIndex([f"s{i}" for i in range(n)], ["f"], np.zeros(n, np.int32), np.arange(n, dtype=np.int32) // 8,
                         np.arange(n, dtype=np.int32) % 8, np.full(n, 16000), RATE, 16000, activity)
    sampling = ActivitySampling(4.0, 0.25)
    order = epoch_order(index, 0, 0, window=16, sampling=sampling)
    assert len(order) == n
    assert np.isin(order, np.arange(4)).mean() > 0.5  # 4 of 40 segments, drawn more than half the time
    assert np.isin(np.arange(4, n), order).sum() >= 3  # background is still drawn
    assert np.array_equal(order, epoch_order(index, 0, 0, window=16, sampling=sampling))
    assert set(epoch_order(index, 0, 0, window=16)) == set(range(n))  # uniform: every segment once


def test_a_crop_start_is_drawn_towards_the_loud_stretch():
    x = np.random.default_rng(0).normal(0, 0.01, 4 * RATE).astype(np.float32)
    x[3 * RATE : 3 * RATE + 2000] += tone(700, 0.25, RATE, 0.5)
    starts = [crop_start(x, RATE, RATE, np.random.default_rng(s), 4.0, 0.1) for s in range(200)]
    covering = np.mean([(s <= 3 * RATE) and (s + RATE >= 3 * RATE + 2000) for s in starts])
    assert covering > 0.7  # a uniform start would cover the call about 1 time in 4
    assert all(0 <= s <= 3 * RATE for s in starts)


def test_activity_is_scored_once_in_duckdb_and_read_by_the_index(tmp_path):
    folder = tmp_path / "rec"
    x = noise(8.0, RATE, 0.02, seed=0)
    x[2 * RATE + 500 : 2 * RATE + 5000] += sweep(500, 2500, 4500 / RATE, RATE, 0.3)
    write(folder / "a.wav", x, RATE, "PCM_16")
    ws = Workspace.at(tmp_path / "ws")
    ingest_quick(ws, folder, segment_seconds=2.0)
    with database.writing(ws) as conn:
        assert ensure_activity(conn, ws) == 4
        assert ensure_activity(conn, ws) == 0  # scored once
        rows = conn.execute("SELECT s.segment_index, a.activity_db FROM segments s JOIN segment_activity a "
                            "USING (segment_id) ORDER BY a.activity_db DESC").fetchall()
    assert rows[0][0] == 1  # the segment with the sweep (2-4 s)
    spec, index = fresh_spec(ws, crop_sampling="activity")
    assert np.isfinite(index.activity).all() and index.activity.max() == pytest.approx(rows[0][1])


# ---------------------------------------------------------------- mel front end


def test_the_mel_bank_peaks_at_its_mel_spaced_centres():
    _, centres, _ = band_edges(24, RATE)
    assert np.all(np.diff(centres) > 0) and centres[-1] < RATE / 2
    bank = sinc_bank(24, 256, RATE)  # a long kernel: narrow enough to find each peak
    spectrum = np.abs(np.fft.rfft(bank, n=4096, axis=1))
    freqs = np.fft.rfftfreq(4096, 1 / RATE)
    peaks = freqs[spectrum.argmax(1)]
    bandwidth = np.diff(band_edges(24, RATE)[0], append=RATE / 2)
    assert np.all(np.abs(peaks - centres) <= np.maximum(bandwidth, 2 * RATE / 4096))
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), np.sqrt(2), rtol=1e-5)


def test_mel_init_changes_only_the_first_convolution_and_keeps_the_export(tmp_path):
    from tasks.model.config import build_config
    from tasks.model.frontend import plan_feature_encoder
    from transformers import Wav2Vec2ForPreTraining

    config = build_config("tiny", plan_feature_encoder(RATE), {"frontend_init": "mel", "num_hidden_layers": 1})
    torch.manual_seed(0)
    random_model = Wav2Vec2ForPreTraining(config)
    torch.manual_seed(0)
    mel_model = Wav2Vec2ForPreTraining(config)
    initialise_frontend(mel_model, "mel")
    first = mel_model.wav2vec2.feature_extractor.conv_layers[0].conv.weight[:, 0].detach().numpy()
    spectrum = np.abs(np.fft.rfft(first, n=1024, axis=1))
    centroid = (spectrum * np.arange(spectrum.shape[1])).sum(1) / spectrum.sum(1)
    assert np.all(np.diff(centroid) > 0)  # channels ordered low to high, as the mel bands
    changed = [k for k, v in mel_model.state_dict().items() if not torch.equal(v, random_model.state_dict()[k])]
    assert changed == ["wav2vec2.feature_extractor.conv_layers.0.conv.weight",
                       "wav2vec2.feature_extractor.conv_layers.0.conv.bias"]
    mel_model.save_pretrained(tmp_path / "hf")
    from transformers import Wav2Vec2Model

    assert Wav2Vec2Model.from_pretrained(tmp_path / "hf").config.frontend_init == "mel"
    with pytest.raises(ValueError, match="unknown frontend_init"):
        initialise_frontend(mel_model, "gabor")


# ---------------------------------------------------------------- pooling chosen in the folds


def test_the_pooling_is_chosen_on_training_recordings_only():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 6)
    y = np.repeat(np.array(["a", "b"] * 10), 6)
    informative = (y == "a")[:, None] * 1.5 + rng.normal(0, 1, (len(y), 3))
    noise_only = rng.normal(0, 1, (len(y), 3))
    options = {"mean": informative, "mean+max": noise_only}
    honest = pooled_probe_predictions(options, y, groups)
    assert honest.chosen == ["mean"] * len(honest.chosen)
    # make the noise option perfect on one fold's held-out recordings only: that fold must not see it
    train, test = grouped_folds(groups)[0]
    leaked = dict(options, **{"mean+max": noise_only.copy()})
    leaked["mean+max"][test] = (y[test] == "a")[:, None] * 100.0
    assert pooled_probe_predictions(leaked, y, groups).chosen[0] == "mean"
    card = scorecard(informative, y, groups, n_boot=20, poolings=options)
    assert card["probe_pooled_macro_f1"][0] == pytest.approx(card["probe_macro_f1"][0], abs=0.05)
    assert "probe_pooled_macro_f1" not in scorecard(informative, y, groups, n_boot=20)
