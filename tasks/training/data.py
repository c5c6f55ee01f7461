"""A deterministic, resumable stream of training crops read from the Parquet segment dataset.

The order of an epoch is a pure function of (seed, epoch): row groups are shuffled, then the
segments of each window of `window` row groups are shuffled together. So a position
(epoch, offset) is all a checkpoint needs to continue exactly where it left off, each row group
is read once per epoch, and memory holds at most `window` row groups whatever the dataset size.

Within a window, segments of like length are batched together (length buckets, in shuffled
order), and a batch is as wide as the longest of its crops that keeps padding within
PADDING_TARGET; longer crops are cut to that width (at random, like every crop), as wav2vec 2.0
crops a batch to its shortest sample. Short clips then share batches with short clips, and the
model computes on little padding.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np

from tasks.audio.activity import crop_start, crop_weights
from tasks.catalog import recordings
from tasks.model.inputs import normalise
from tasks.workspace import Workspace
from tasks.workspace.storage import open_parquet


@dataclass(frozen=True)
class SegmentIndex:
    """The segments a run trains on, and where their samples are."""

    segment_ids: list[str]
    files: list[str]  # Parquet paths or URLs (Workspace.segment_file)
    file_of: np.ndarray  # index into files, per segment
    row_group: np.ndarray
    row_in_group: np.ndarray
    valid_samples: np.ndarray
    sample_rate: int
    segment_samples: int
    activity: np.ndarray | None = None  # dB above the recording's floor per segment (NaN: not scored)

    def __len__(self) -> int:
        return len(self.segment_ids)

    @property
    def hours(self) -> float:
        return float(self.valid_samples.sum()) / self.sample_rate / 3600

    @property
    def fingerprint(self) -> str:
        return hashlib.blake2b("\n".join(self.segment_ids).encode(), digest_size=12).hexdigest()


def build_index(
    conn: duckdb.DuckDBPyConnection, workspace: Workspace, exclude: list[str], max_clipped_fraction: float,
    min_valid_seconds: float,
) -> SegmentIndex:
    """Eligible segments: not silent, no NaN/Inf, not clipped beyond the limit, long enough, and
    not from a held-out recording (split by recording, never by segment)."""
    rows = recordings.training_segments(conn, workspace, exclude, max_clipped_fraction, min_valid_seconds)
    if not rows:
        raise ValueError("no segments to train on: ingest recordings first (or loosen the exclusions)")
    config = recordings.dataset_config(conn)
    sample_rate = int(config["sample_rate"])
    segment_samples = round(float(config["segment_seconds"]) * sample_rate)
    files = sorted({r[1] for r in rows})
    file_index = {f: i for i, f in enumerate(files)}
    group_starts = {}
    for f in files:
        metadata = open_parquet(workspace.segment_file(f)).metadata
        group_starts[f] = np.cumsum([0] + [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
    file_of = np.array([file_index[r[1]] for r in rows], np.int32)
    row_group = np.empty(len(rows), np.int32)
    row_in_group = np.empty(len(rows), np.int32)
    for i, (_, f, row, _, _, _) in enumerate(rows):
        starts = group_starts[f]
        g = int(np.searchsorted(starts, row, side="right") - 1)
        row_group[i], row_in_group[i] = g, row - starts[g]
    return SegmentIndex(
        segment_ids=[r[0] for r in rows],
        files=[workspace.segment_file(f) for f in files],
        file_of=file_of, row_group=row_group, row_in_group=row_in_group,
        valid_samples=np.array([round(r[3] * sample_rate) for r in rows], np.int64),
        sample_rate=sample_rate, segment_samples=segment_samples,
        activity=np.array([r[5] for r in rows], np.float64),
    )


@dataclass(frozen=True)
class ActivitySampling:
    """Crops drawn towards activity: weights e^(activity / temperature_db), with `floor_share` of
    the draws uniform (tasks.audio.activity.crop_weights)."""

    temperature_db: float
    floor_share: float


def epoch_order(index: SegmentIndex, seed: int, epoch: int, window: int, batch_size: int = 1,
                crop: int | None = None, sampling: ActivitySampling | None = None) -> np.ndarray:
    """Segment positions in the order epoch `epoch` visits them: windows of row groups in
    shuffled order; within a window, segments shuffled, then sorted by crop length (min(valid,
    crop)) into runs of `batch_size` that are shuffled again, so a batch holds crops of like length.
    With `sampling`, a window's segments are drawn with replacement, as many as it holds, each
    by its activity weight: an epoch still reads every row group once, and visits active
    segments more often than plain background."""
    rng = np.random.default_rng([seed, epoch])
    units = np.unique(np.stack([index.file_of, index.row_group], 1), axis=0)
    units = units[rng.permutation(len(units))]
    unit_of = {(int(f), int(g)): i for i, (f, g) in enumerate(units)}
    rank = np.array([unit_of[(int(f), int(g))] for f, g in zip(index.file_of, index.row_group)]) // window
    lengths = np.minimum(index.valid_samples, crop if crop is not None else index.segment_samples)
    weights = None
    if sampling is not None:
        activity = index.activity if index.activity is not None else np.full(len(index), np.nan)
        weights = crop_weights(activity, sampling.temperature_db, sampling.floor_share)
    order = []
    for w in range(int(rank.max()) + 1):
        members = np.flatnonzero(rank == w)
        if weights is not None:
            p = weights[members]
            members = rng.choice(members, size=len(members), replace=True, p=p / p.sum())
        members = members[rng.permutation(len(members))]
        if batch_size > 1:
            members = members[np.argsort(lengths[members], kind="stable")]
            runs = [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
            members = np.concatenate([runs[i] for i in rng.permutation(len(runs))])
        order.append(members)
    return np.concatenate(order)


# Most of a batch tensor that may be padding; its width is chosen to stay within it.
PADDING_TARGET = 0.08


def batch_width(lengths: np.ndarray, target: float = PADDING_TARGET) -> int:
    """The widest of the crops' lengths at which zero padding is at most `target` of the batch."""
    for width in np.unique(lengths)[::-1]:
        if np.maximum(width - lengths, 0).sum() <= target * len(lengths) * width:
            return int(width)
    return int(lengths.min())


@dataclass
class Batch:
    audio: np.ndarray  # (B, width) float32, normalised per crop, zero padded; a shard's rows only
    audio_seconds: float  # of the whole batch
    end_position: tuple[int, int]  # (epoch, offset) after this batch
    lengths: np.ndarray  # valid samples of every crop of the whole batch; width is their maximum

    @property
    def padding_share(self) -> float:
        """Share of the whole batch's (B x width) samples that are padding."""
        return 1.0 - float(self.lengths.sum()) / max(1, len(self.lengths) * self.audio.shape[1])


class CropStream:
    """Batches of random crops from `index`, starting at `position` = (epoch, offset).

    With `rows` = (first, last), only those rows of each batch are read (one process's shard in
    distributed training); the position and the crops chosen are those of the whole batch.
    """

    def __init__(self, index: SegmentIndex, batch_size: int, crop_seconds: float, seed: int,
                 position: tuple[int, int] = (0, 0), window: int = 16, rows: tuple[int, int] | None = None,
                 pin_memory: bool = False, sampling: ActivitySampling | None = None):
        self.index, self.batch_size, self.seed, self.window = index, batch_size, seed, window
        self.sampling = sampling
        self.rows = rows or (0, batch_size)
        self.crop = min(round(crop_seconds * index.sample_rate), index.segment_samples)
        self.pin_memory = pin_memory  # batches in page-locked memory: their copy to a GPU runs asynchronously
        self.epoch, self.offset = position
        self._order = self._epoch_order()
        self._groups: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _epoch_order(self) -> np.ndarray:
        return epoch_order(self.index, self.seed, self.epoch, self.window, self.batch_size, self.crop, self.sampling)

    def _row_group(self, file: int, group: int) -> np.ndarray:
        key = (file, group)
        if key not in self._groups:
            table = open_parquet(self.index.files[file]).read_row_group(group, columns=["audio"])
            flat = table.column("audio").combine_chunks().values.to_numpy(zero_copy_only=False)
            self._groups[key] = flat.reshape(table.num_rows, -1)
            while len(self._groups) > self.window + 1:
                self._groups.popitem(last=False)
        return self._groups[key]

    def _samples(self, i: int) -> np.ndarray:
        return self._row_group(int(self.index.file_of[i]), int(self.index.row_group[i]))[self.index.row_in_group[i]]

    def _next_item(self) -> tuple[int, int]:
        if self.offset >= len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._epoch_order()
        item = (int(self._order[self.offset]), self.offset)
        self.offset += 1
        return item

    def _zeros(self, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        if self.pin_memory:
            import torch

            return torch.zeros(shape, dtype={np.float32: torch.float32, np.int64: torch.int64}[dtype],
                               pin_memory=True).numpy()
        return np.zeros(shape, dtype)

    def next_batch(self) -> Batch:
        first, last = self.rows
        items = []
        for _ in range(self.batch_size):
            i, offset = self._next_item()
            items.append((i, self.epoch, offset))  # the epoch after the item: a boundary may have just been crossed
        lengths = np.minimum(self.index.valid_samples[[i for i, _, _ in items]], self.crop)
        width = batch_width(lengths)
        lengths = np.minimum(lengths, width)
        picks = []
        for (i, epoch, offset), length in zip(items, lengths):
            valid = int(self.index.valid_samples[i])
            rng = np.random.default_rng([self.seed, epoch, offset])
            if self.sampling is not None and valid > length:
                # towards the segment's loudest stretch; every rank reads every row for this, so
                # all of them pick the same crops
                start = crop_start(self._samples(i)[:valid], int(length), self.index.sample_rate, rng,
                                   self.sampling.temperature_db, self.sampling.floor_share)
            else:
                start = int(rng.integers(0, valid - int(length) + 1))
            picks.append((i, start, int(length)))
        audio = self._zeros((last - first, width))
        batch_lengths = self._zeros(lengths.shape, np.int64)
        batch_lengths[:] = lengths
        for b in range(first, last):
            i, start, length = picks[b]
            samples = self._samples(i)
            audio[b - first, :length] = normalise(samples[start : start + length])
        return Batch(audio, float(lengths.sum()) / self.index.sample_rate, (self.epoch, self.offset), batch_lengths)

    def batches(self, count: int, prefetch: int = 2) -> Iterator[Batch]:
        """`count` batches, read ahead on a thread so the model never waits for Parquet."""
        out: queue.Queue = queue.Queue(maxsize=prefetch)

        def produce() -> None:
            try:
                for _ in range(count):
                    out.put(self.next_batch())
            except BaseException as exc:  # surfaced in the consumer
                out.put(exc)

        thread = threading.Thread(target=produce, daemon=True, name="crop-prefetch")
        thread.start()
        for _ in range(count):
            item = out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()
