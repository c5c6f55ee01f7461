"""Chunk checkpoints: complete or absent, never half-written.

    checkpoints/<run>/chunk-0003/
        state.pt        model, optimiser, scheduler, temperature, step, data position, RNG states
        metrics.json    the chunk's per-step training metrics and its training-health verdict
                        (re-committed if the DB missed them)
        hf/             save_pretrained export: config.json, model.safetensors, preprocessor_config.json
        manifest.json   content hashes, written last

Each is built in `chunk-0003.partial/` and renamed into place in one step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tasks.workspace.durable import fsync_dir, fsync_file

CHUNK_DIR = re.compile(r"^chunk-(\d{4,})$")


@dataclass(frozen=True)
class CheckpointInfo:
    chunk: int
    path: Path
    step: int
    mean_loss: float
    state_sha256: str
    export_sha256: str


def write_metrics(folder: Path, steps: list[dict], health: dict) -> None:
    (folder / "metrics.json").write_text(json.dumps({"steps": steps, "health": health}))


def read_metrics(folder: Path) -> tuple[list[dict], dict | None]:
    """(per-step metrics, health verdict) of a checkpoint; checkpoints written before verdicts
    were kept hold the steps alone."""
    data = json.loads((folder / "metrics.json").read_text())
    if isinstance(data, list):
        return data, None
    return data["steps"], data.get("health")


def chunk_dir(run_dir: Path, chunk: int) -> Path:
    return run_dir / f"chunk-{chunk:04d}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fsync_file(path)
    for path in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        fsync_dir(path)


def begin(run_dir: Path, chunk: int) -> Path:
    partial = run_dir / f"chunk-{chunk:04d}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left by a run killed while writing
    partial.mkdir(parents=True)
    return partial


def finish(partial: Path, chunk: int, step: int, mean_loss: float) -> CheckpointInfo:
    """Hash, flush and rename a fully written partial checkpoint into place."""
    state_sha = sha256_file(partial / "state.pt")
    export_sha = sha256_tree(partial / "hf")
    manifest = {"chunk": chunk, "step": step, "mean_loss": mean_loss,
                "state_sha256": state_sha, "export_sha256": export_sha}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _fsync_tree(partial)
    final = chunk_dir(partial.parent, chunk)
    if final.exists():
        shutil.rmtree(final)
    os.rename(partial, final)
    fsync_dir(partial.parent)
    return CheckpointInfo(chunk, final, step, mean_loss, state_sha, export_sha)


def read_info(folder: Path) -> CheckpointInfo | None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text())
    return CheckpointInfo(data["chunk"], folder, data["step"], data["mean_loss"], data["state_sha256"], data["export_sha256"])


def complete(run_dir: Path) -> list[CheckpointInfo]:
    """Every complete checkpoint of a run, oldest first."""
    if not run_dir.exists():
        return []
    found = []
    for folder in run_dir.iterdir():
        if folder.is_dir() and CHUNK_DIR.match(folder.name) and (info := read_info(folder)):
            found.append(info)
    return sorted(found, key=lambda i: i.chunk)


def verify(info: CheckpointInfo) -> None:
    if sha256_file(info.path / "state.pt") != info.state_sha256:
        raise ValueError(f"{info.path}/state.pt does not match its manifest hash: the checkpoint is damaged")


def prune(run_dir: Path, keep_last: int) -> tuple[list[CheckpointInfo], CheckpointInfo | None]:
    """Delete all but the last `keep_last` checkpoints and the best (lowest mean loss); return the kept ones."""
    infos = complete(run_dir)
    if not infos:
        return [], None
    best = min(infos, key=lambda i: i.mean_loss)
    keep = {i.chunk for i in infos[-keep_last:]} | {best.chunk}
    for info in infos:
        if info.chunk not in keep:
            shutil.rmtree(info.path)
    for leftover in run_dir.glob("chunk-*.partial"):
        shutil.rmtree(leftover)
    return [i for i in infos if i.chunk in keep], best
