import math

import pytest
import torch
from transformers import Wav2Vec2Model

from tasks.model.config import build_config
from tasks.model.frontend import plan_feature_encoder, receptive_field


def test_16k_gives_the_papers_encoder():
    plan = plan_feature_encoder(16000)
    assert plan.strides == (5, 2, 2, 2, 2, 2, 2) and plan.kernels == (10, 3, 3, 3, 3, 2, 2)
    assert plan.receptive_field_samples == 400 and plan.frame_rate_hz == 50.0


@pytest.mark.parametrize("rate", [2000, 16000, 96000])
def test_frames_of_20_ms_and_a_receptive_field_of_at_least_25_ms(rate):
    plan = plan_feature_encoder(rate, frame_ms=20, receptive_field_ms=25)
    assert math.prod(plan.strides) == rate // 50
    assert plan.frame_seconds == pytest.approx(0.02)
    assert 0.025 <= plan.receptive_field_seconds < 0.04
    assert plan.nyquist_hz == rate / 2
    assert all(2 <= s <= 5 for s in plan.strides)


@pytest.mark.parametrize("rate", [2000, 44150, 96000])
def test_the_model_produces_one_frame_per_hop(rate):
    plan = plan_feature_encoder(rate)
    model = Wav2Vec2Model(build_config("tiny", plan)).eval()
    seconds = 1.0
    with torch.no_grad():
        out = model(torch.randn(1, int(rate * seconds)))
    expected = (int(rate * seconds) - plan.receptive_field_samples) // plan.hop_samples + 1
    assert out.last_hidden_state.shape[1] == expected
    assert int(model._get_feat_extract_output_lengths(int(rate * seconds))) == expected


def test_an_odd_rate_gets_the_nearest_frame_that_factors():
    plan = plan_feature_encoder(44150)  # 20 ms would be 883 samples, a prime
    assert abs(plan.frame_seconds - 0.02) < 0.001
    assert receptive_field(plan.strides, plan.kernels) == plan.receptive_field_samples
