"""tasks.model: the network's own parts, apart from training it."""

from __future__ import annotations

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

from tasks.model.quantizer import StableQuantizer
from tasks.training.loop import stabilise

SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(32, 32),
             conv_stride=(5, 2), conv_kernel=(10, 3), codevector_dim=32, proj_codevector_dim=32,
             num_codevectors_per_group=8)


def test_the_stable_quantizer_takes_the_networks_own_parameters_and_draws_nothing():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config(**SMALL))
    model.quantizer.temperature = 0.7
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameters = [id(p) for p in model.quantizer.parameters()]
    generator = torch.get_rng_state()
    stabilise(model, feature_grad_mult=1.0)
    assert type(model.quantizer) is StableQuantizer and isinstance(model.quantizer, Wav2Vec2GumbelVectorQuantizer)
    assert torch.equal(generator, torch.get_rng_state())  # a run's initial weights do not depend on it
    assert [id(p) for p in model.quantizer.parameters()] == parameters  # an optimiser built later sees them
    assert list(model.state_dict()) == list(before)  # checkpoints and exports keep their keys
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.quantizer.temperature == 0.7


def test_the_stable_quantizer_picks_the_codes_of_transformers_own_in_eval():
    torch.manual_seed(1)
    config = Wav2Vec2Config(**SMALL)
    own = Wav2Vec2GumbelVectorQuantizer(config).eval()
    torch.nn.init.normal_(own.codevectors)
    stable = StableQuantizer.replacing(own, config).eval()
    features = torch.randn(2, 5, config.conv_dim[-1])
    expected, _ = own(features)
    got, _ = stable(features)
    assert torch.allclose(expected, got, atol=1e-6)
