"""The stages composed: which are current, what the pipeline and refresh run next."""
