"""wav2vec 2.0 configurations: presets, adapted to the workspace's sample rate."""

from __future__ import annotations

from typing import Any

from transformers import Wav2Vec2Config

from tasks.model.frontend import FeatureEncoderPlan

# Transformer and quantizer sizes. Convolution widths ramp from `conv_first` to `conv_last` over
# however many encoder layers the sample rate needs (7 at 16 kHz).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        conv_first=32, conv_last=128, hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=768, num_codevector_groups=2, num_codevectors_per_group=64, codevector_dim=128,
        proj_codevector_dim=64, num_negatives=20, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8,
    ),
    "small": dict(
        conv_first=128, conv_last=384, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
        intermediate_size=1536, num_codevector_groups=2, num_codevectors_per_group=160, codevector_dim=256,
        proj_codevector_dim=128, num_negatives=50, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    ),
    # The paper's BASE: 512-channel encoder, 12 x 768 transformer, 2 x 320 codes, 100 distractors.
    "base": dict(
        conv_first=512, conv_last=512, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, num_codevector_groups=2, num_codevectors_per_group=320, codevector_dim=256,
        proj_codevector_dim=256, num_negatives=100, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    ),
}


def conv_widths(first: int, last: int, layers: int) -> tuple[int, ...]:
    if layers == 1:
        return (last,)
    return tuple(int(round(first + (last - first) * i / (layers - 1))) for i in range(layers))


def build_config(preset: str, plan: FeatureEncoderPlan, overrides: dict[str, Any] | None = None,
                 mask_time_prob: float = 0.65, mask_time_length: int = 10) -> Wav2Vec2Config:
    """A randomly-initialisable Wav2Vec2Config for `preset` on `plan`'s sample rate.

    Layer-normalised convolutions ("layer") rather than the paper's group norm, so padded crops
    can be masked out with an attention mask and embeddings never depend on batching.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    sizes = dict(PRESETS[preset])
    first, last = sizes.pop("conv_first"), sizes.pop("conv_last")
    fields = dict(
        conv_dim=conv_widths(first, last, len(plan.strides)),
        conv_stride=plan.strides,
        conv_kernel=plan.kernels,
        num_feat_extract_layers=len(plan.strides),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        mask_time_prob=mask_time_prob,
        mask_time_length=mask_time_length,
        mask_time_min_masks=2,
        diversity_loss_weight=0.1,
        contrastive_logits_temperature=0.1,
        feat_quantizer_dropout=0.0,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        layerdrop=0.0,
        **sizes,
    )
    fields.update(overrides or {})
    if fields.get("pretrain_targets") == "data2vec" and "proj_codevector_dim" not in (overrides or {}):
        # data2vec's regression head maps the context to the teacher's width: project_hid, hidden -> hidden
        fields["proj_codevector_dim"] = fields["hidden_size"]
    config = Wav2Vec2Config(**fields)
    config.sampling_rate = plan.sample_rate  # saved with the export: what rate the model expects
    return config
