"""The model library every stage shares: what a ceta2vec wav2vec 2.0 network is, apart from training it.

- `frontend`: the feature-encoder planner (strides and kernels for a sample rate and frame hop);
- `config`: the presets and the `Wav2Vec2Config` they build;
- `checkpoints`: the on-disk checkpoint format (folders, hashes, metrics files), no torch;
- `health`: the training-health verdict read from step metrics;
- `inputs`: audio normalisation as the network sees it;
- `device`: CPU/GPU choice and autocast;
- `quantizer`: the Gumbel quantizer with fp32 arithmetic that training swaps in.

The step-metrics and chunk-health records live in `schemas.records`, the one home of records.
Only `config`, `device` and `quantizer` import torch or transformers, so the SQL floor (`tasks.catalog`) can use the
rest without loading them.
"""
