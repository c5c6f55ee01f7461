"""How good are the vectors: probes and k-NN against log-mel, MFCC and random-weight baselines."""
