"""The flows the refreshing deployments run: the pipeline's own flows, plus a completion hook that
announces new data (flows/runtime/completion.py). Same names, parameters and behaviour otherwise.

They live here, not in flows/, because flows never import deployments; the deployments'
entrypoints name these objects (`deployments.served_flows.ingest`, ...).
"""

from __future__ import annotations

from flows.runtime.completion import announce_completion
from flows.continue_pretraining import continue_pretraining as _continue_pretraining
from flows.ingest import ingest as _ingest

ingest = _ingest.with_options(on_completion=[*_ingest.on_completion_hooks, announce_completion])
continue_pretraining = _continue_pretraining.with_options(
    on_completion=[*_continue_pretraining.on_completion_hooks, announce_completion])
