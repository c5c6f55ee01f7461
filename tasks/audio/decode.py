"""Reading recordings in blocks, choosing channels and resampling as a stream.

A multi-hour 96 kHz file never sits in memory whole: `stream_audio` yields one block of a few
seconds at a time, already mixed or split into channels and resampled to the target rate.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from tasks.audio.failures import IngestFailure

SUPPORTED_EXTENSIONS = frozenset(
    {".wav", ".wave", ".bwf", ".rf64", ".w64", ".flac", ".mp3", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".caf"}
)
# Audio files a folder scan reports as unsupported rather than silently passing over.
UNSUPPORTED_AUDIO_EXTENSIONS = frozenset({".m4a", ".aac", ".wma", ".opus", ".amr", ".ape", ".mka", ".3gp"})

# Integer PCM decoded to float lands in [-1, 1); a sample this close to full scale is clipped.
CLIP_THRESHOLD = 0.999
# Float PCM has no full scale: a sample beyond 1.0 was not clipped there (it is stored as it is);
# only a sample at full scale, as a file converted from clipped integer audio holds, counts as clipped.
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
MIX = -1  # channel id of the mono mixdown


@dataclass(frozen=True)
class AudioInfo:
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    header_warnings: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: Path) -> AudioInfo:
    """Header facts of an audio file, or an IngestFailure that says what is wrong with it."""
    try:
        facts = path.stat()
    except FileNotFoundError:
        raise IngestFailure("read", "file not found") from None
    except PermissionError:
        raise IngestFailure("read", "permission denied (cannot stat the file)") from None
    if not stat.S_ISREG(facts.st_mode):  # libsndfile would read a FIFO or /dev/zero forever
        raise IngestFailure("read", "not a regular file; only files are read")
    if facts.st_size == 0:
        raise IngestFailure("read", "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise IngestFailure("read", "permission denied (file is not readable)")
    try:
        info = sf.info(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except sf.LibsndfileError as exc:
        raise IngestFailure("decode", f"not a readable audio file ({_libsndfile_reason(exc)})") from None
    except (RuntimeError, OSError) as exc:
        raise IngestFailure("decode", f"not a readable audio file ({exc})") from None
    if info.samplerate <= 0:
        raise IngestFailure("decode", f"header declares an invalid sample rate ({info.samplerate} Hz)")
    if info.channels <= 0:
        raise IngestFailure("decode", f"header declares {info.channels} channels")
    if info.frames <= 0:
        raise IngestFailure("decode", "no audio frames (header declares a length of 0)")
    return AudioInfo(
        format=info.format, subtype=info.subtype, sample_rate=int(info.samplerate),
        channels=int(info.channels), frames=int(info.frames), header_warnings=_header_warnings(info),
    )


# AIFF's chunks are indented in the report (" SSND : 640008 (should be 383986)"), WAV's are not.
_SHOULD_BE = re.compile(r"^\s*(data|RIFF|FORM|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


_OGG_CUT = re.compile(r"lacks an end-of-stream bit|ended unexpectedly without an End-Of-Stream", re.IGNORECASE)


def _header_warnings(info: sf._SoundFileInfo) -> tuple[str, ...]:
    """libsndfile quietly shortens a truncated WAV/AIFF to the data present; its header report
    says by how much ("data : 64000 (should be 31978)"). An Ogg file has no declared length: a cut
    one decodes cleanly up to its last whole page, and only the missing end-of-stream page tells."""
    if _OGG_CUT.search(info.extra_info or ""):
        return (f"truncated: the Ogg stream ends without its end-of-stream page, so the file was cut short "
                f"({info.frames / info.samplerate:.2f} s readable)",)
    for match in _SHOULD_BE.finditer(info.extra_info or ""):
        if match[1] in ("data", "SSND") and int(match[2]) > int(match[3]):
            return (
                f"truncated: header declares {int(match[2])} bytes of audio data but only {int(match[3])} "
                f"are present ({info.frames / info.samplerate:.2f} s readable)",
            )
    if unread := _bytes_after_riff(info.extra_info or ""):
        return (f"header declares less than the file holds: {unread} bytes follow its RIFF chunk and are no "
                f"WAV chunk (a header never finalised?), so only {info.frames / info.samplerate:.3f} s were read",)
    return ()


_LENGTH = re.compile(r"^Length\s*:\s*(\d+)", re.MULTILINE)
_RIFF = re.compile(r"^RIFF\s*:\s*(\d+)\s*$", re.MULTILINE)


def _bytes_after_riff(extra_info: str) -> int:
    """Bytes of a WAV file past the end its RIFF header declares, when libsndfile found no chunk
    there: audio a recorder wrote without updating the header (it claims 100 bytes, holds minutes)."""
    length, riff = _LENGTH.search(extra_info), _RIFF.search(extra_info)
    if not (length and riff and "Unknown chunk marker" in extra_info):
        return 0
    return max(0, int(length[1]) - (int(riff[1]) + 8))


def _libsndfile_reason(exc: Exception) -> str:
    message = str(exc)
    # libsndfile prefixes its message with the path; the error row already names the file.
    if ": " in message and message.startswith("Error opening"):
        message = message.split(": ", 1)[1]
    if "possibly a pipe" in message:
        # libsndfile's words when no format takes the bytes after its MPEG probe (random bytes named
        # .mp3 or .flac); the file was checked to be a regular, readable file before it was opened
        return "Format not recognised: the bytes match no audio format (WAV, FLAC, MP3, OGG, AIFF, ...)"
    return message.strip().rstrip(".")


@dataclass(frozen=True)
class ChannelPolicy:
    """'mix' (mono mixdown, channel id -1), 'all' (each channel its own stream) or one index."""

    spec: str

    def stream_ids(self, channels: int) -> list[int]:
        if self.spec == "mix":
            return [MIX]
        if self.spec == "all":
            return list(range(channels))
        index = int(self.spec)
        if index >= channels:
            raise IngestFailure(
                "validate", f"channel {index} requested but the file has {channels} channel(s) (0..{channels - 1})"
            )
        return [index]

    def split(self, block: np.ndarray, stream_ids: list[int]) -> list[np.ndarray]:
        """One contiguous 1-D float32 array per stream, from a (frames, channels) block."""
        if stream_ids == [MIX]:
            mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
            return [np.ascontiguousarray(mono)]
        return [np.ascontiguousarray(block[:, c]) for c in stream_ids]


class StreamResampler:
    """Band-limited resampling of an unbounded stream, with no seams at block boundaries."""

    def __init__(self, in_rate: int, out_rate: int):
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = (
            None if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


@dataclass
class FlagCounts:
    """Counts of clipped and non-finite *input* samples for one block of one stream.

    Each is `(first_output_index, counts)`: counted at the original rate (where clipping really
    happened) and binned onto the output sample grid by time, so they line up with the stored
    audio whatever the resampler's delay.
    """

    clipped: tuple[int, np.ndarray] | None = None
    nonfinite: tuple[int, np.ndarray] | None = None


@dataclass
class StreamBlock:
    """One block of one stream at the target rate."""

    stream_id: int
    samples: np.ndarray
    flags: FlagCounts | None = None


@dataclass
class ReadReport:
    frames_read: int = 0
    nonfinite: int = 0
    clipped: int = 0
    over_full_scale: int = 0  # float files only: samples beyond 1.0, stored unclipped
    peak: float = 0.0  # of the finite samples read
    warnings: list[str] = field(default_factory=list)


def _bin_flags(flags: np.ndarray, in_start: int, in_rate: int, out_rate: int) -> tuple[int, np.ndarray]:
    idx = np.flatnonzero(flags)
    out_idx = ((in_start + idx) * out_rate) // in_rate
    first = int(out_idx[0])
    return first, np.bincount(out_idx - first).astype(np.int32)


def stream_audio(
    path: Path,
    info: AudioInfo,
    policy: ChannelPolicy,
    out_rate: int,
    report: ReadReport,
    block_seconds: float = 4.0,
) -> Iterator[list[StreamBlock]]:
    """Yield, block after block, the file's streams resampled to `out_rate`.

    Non-finite samples (NaN/Inf) are replaced by 0 before resampling, since one NaN would spread
    through the filter; they are counted so the segments that held them can be flagged.
    """
    stream_ids = policy.stream_ids(info.channels)
    resamplers = [StreamResampler(info.sample_rate, out_rate) for _ in stream_ids]
    block_frames = max(4096, int(block_seconds * info.sample_rate))
    position = 0
    try:
        handle = sf.SoundFile(os.fsencode(path))
    except sf.LibsndfileError as exc:
        raise IngestFailure("decode", f"not a readable audio file ({_libsndfile_reason(exc)})") from None
    except PermissionError:
        raise IngestFailure("read", "permission denied") from None
    with handle:
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                if position == 0:
                    raise IngestFailure("decode", f"decoding failed at the start ({_libsndfile_reason(exc)})") from None
                # A recording cut short (a dead battery, a broken copy): keep what could be decoded.
                report.warnings.append(
                    f"truncated: decoding stopped at {position / info.sample_rate:.2f} s of "
                    f"{info.duration_s:.2f} s ({_libsndfile_reason(exc)}); the rest is unreadable"
                )
                yield _flush(stream_ids, resamplers)
                break
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    raise IngestFailure("read", "permission denied") from None
                raise IngestFailure("read", f"read failed at {position / info.sample_rate:.2f} s ({exc})") from None
            last = len(block) < block_frames
            if len(block):
                yield list(_process_block(block, position, stream_ids, policy, resamplers, info, out_rate, report, last))
            elif last:
                yield _flush(stream_ids, resamplers)
            position += len(block)
            if last:
                break
    report.frames_read = position
    report.warnings.extend(info.header_warnings)
    if position < info.frames and not any(w.startswith("truncated") for w in report.warnings):
        report.warnings.append(
            f"truncated: header declares {info.frames} frames ({info.duration_s:.2f} s) "
            f"but only {position} ({position / info.sample_rate:.2f} s) could be read"
        )


def _flush(stream_ids: list[int], resamplers: list[StreamResampler]) -> list[StreamBlock]:
    """The resamplers' last samples, held back by their filters until the stream ends."""
    return [StreamBlock(sid, r.push(np.zeros(0, np.float32), last=True)) for sid, r in zip(stream_ids, resamplers)]


def _process_block(
    block: np.ndarray, position: int, stream_ids: list[int], policy: ChannelPolicy,
    resamplers: list[StreamResampler], info: AudioInfo, out_rate: int, report: ReadReport, last: bool,
) -> Iterator[StreamBlock]:
    finite = np.isfinite(block)
    has_nonfinite = not finite.all()
    if has_nonfinite:
        report.nonfinite += int(block.size - finite.sum())
        block = np.where(finite, block, np.float32(0.0))
    magnitude = np.abs(block)
    if magnitude.size:
        report.peak = max(report.peak, float(magnitude.max()))
    clipped = magnitude >= CLIP_THRESHOLD
    if info.subtype in FLOAT_SUBTYPES:
        beyond = magnitude > 1.0
        report.over_full_scale += int(beyond.sum())
        clipped &= ~beyond
    has_clipped = bool(clipped.any())
    if has_clipped:
        report.clipped += int(clipped.sum())
    for sid, samples, resampler, cols in zip(
        stream_ids, policy.split(block, stream_ids), resamplers, _column_sets(stream_ids, info.channels)
    ):
        counts = None
        if has_nonfinite or has_clipped:
            counts = FlagCounts()
            if has_clipped:
                hit = clipped[:, cols].any(axis=1)
                if hit.any():
                    counts.clipped = _bin_flags(hit, position, info.sample_rate, out_rate)
            if has_nonfinite:
                hit = ~finite[:, cols].all(axis=1)
                if hit.any():
                    counts.nonfinite = _bin_flags(hit, position, info.sample_rate, out_rate)
        yield StreamBlock(sid, resampler.push(samples, last=last), counts)


def _column_sets(stream_ids: list[int], channels: int) -> list[list[int]]:
    if stream_ids == [MIX]:
        return [list(range(channels))]
    return [[c] for c in stream_ids]
