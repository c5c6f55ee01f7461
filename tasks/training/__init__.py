"""wav2vec 2.0 pretraining: model config, data stream, the one step loop, checkpoints, health."""
