"""One recording in, one staged Parquet file of segments out (plus the facts to commit)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta, timezone

from schemas.arrow import SegmentRow
from schemas.names import file_name
from schemas.records import StagedRecording
from schemas.settings import IngestSettings
from tasks.audio.decode import MIX, ChannelPolicy, ReadReport, probe, stream_audio
from tasks.audio.failures import IngestFailure, disk_full
from tasks.audio.quality import segment_quality
from tasks.audio.segmenting import Segment, Segmenter
from tasks.audio.timestamps import parse_start_time
from tasks.ingest.discovery import SourceFile, recording_id
from tasks.workspace import Workspace
from tasks.workspace.segment_files import SegmentFileWriter

UNKNOWN = "unknown"
# Isolated full-scale samples are common and harmless; warn when clipping is a real share of the file.
CLIPPING_WARN_SHARE = 1e-4


def slug(text: str | None) -> str:
    """A partition-safe folder name for a site."""
    return file_name(text, fallback=UNKNOWN)


def segment_samples(settings: IngestSettings) -> tuple[int, int]:
    rate = settings.sample_rate
    return round(settings.segment_seconds * rate), round((settings.hop_seconds or settings.segment_seconds) * rate)


def prepare_recording(source: SourceFile, digest: str, settings: IngestSettings, workspace: Workspace) -> StagedRecording:
    """Decode, resample, segment and measure one file into a staged Parquet file.

    Raises IngestFailure for a file that cannot be ingested; the staged file is removed then.
    """
    info = probe(source.path)
    policy = ChannelPolicy(settings.channels)
    stream_ids = policy.stream_ids(info.channels)
    rec_id = recording_id(digest)
    if settings.start_time is not None:
        start_time = settings.start_time if settings.start_time.tzinfo else settings.start_time.replace(tzinfo=timezone.utc)
        start_time, time_source = start_time.astimezone(timezone.utc), "given"
    else:
        start_time, time_source = parse_start_time(source.path.name)
    site = settings.site or UNKNOWN
    date = start_time.date().isoformat() if start_time else UNKNOWN
    out_rate = settings.sample_rate
    seg_n, hop_n = segment_samples(settings)
    segmenters = {sid: Segmenter(seg_n, hop_n, settings.final_segment) for sid in stream_ids}
    report = ReadReport()
    writer = SegmentFileWriter(workspace.staging_dir, f"rec-{rec_id}")
    ratio = info.sample_rate / out_rate
    flagged_nonfinite = 0

    def write(stream_id: int, segment: Segment) -> None:
        nonlocal flagged_nonfinite
        valid_audio = segment.audio[: segment.valid]
        quality = segment_quality(
            valid_audio, out_rate, segment.clipped, max(1, round(segment.valid * ratio)),
            segment.nonfinite, settings.silence_dbfs,
        )
        flagged_nonfinite += quality.nonfinite_count > 0
        start_s = segment.start / out_rate
        tag = "mix" if stream_id == MIX else f"ch{stream_id}"
        row = SegmentRow(
            segment_id=f"{rec_id}-{tag}-{segment.index:06d}",
            recording_id=rec_id,
            channel=stream_id,
            segment_index=segment.index,
            start_s=start_s,
            end_s=start_s + seg_n / out_rate,
            valid_s=segment.valid / out_rate,
            start_time=start_time + timedelta(seconds=start_s) if start_time else None,
            end_time=start_time + timedelta(seconds=start_s + segment.valid / out_rate) if start_time else None,
            sample_rate=out_rate,
            **asdict(quality),  # every quality statistic is a column of its own
        )
        writer.add(row, segment.audio)

    try:
        for blocks in stream_audio(source.path, info, policy, out_rate, report):
            for block in blocks:
                flags = block.flags
                for segment in segmenters[block.stream_id].push(
                    block.samples, flags.clipped if flags else None, flags.nonfinite if flags else None
                ):
                    write(block.stream_id, segment)
        for stream_id, segmenter in segmenters.items():
            for segment in segmenter.finish():
                write(stream_id, segment)
        staged = writer.close()
    except IngestFailure:
        writer.abort()
        raise
    except OSError as exc:
        writer.abort()
        if disk_full(exc):
            raise  # not the file's fault: the run stops
        raise IngestFailure("decode", f"unexpected decoder error: {type(exc).__name__}: {exc}") from exc
    except MemoryError:
        writer.abort()
        raise IngestFailure("decode", "out of memory while decoding") from None
    except Exception as exc:
        writer.abort()
        raise IngestFailure("decode", f"unexpected decoder error: {type(exc).__name__}: {exc}") from exc

    warnings = list(report.warnings)
    if report.nonfinite:
        warnings.append(
            f"{report.nonfinite} non-finite samples (NaN/Inf) replaced by 0; "
            f"{flagged_nonfinite} segment(s) flagged (nonfinite_count > 0)"
        )
    share = report.clipped / max(1, report.frames_read * info.channels)
    if share >= CLIPPING_WARN_SHARE:
        warnings.append(f"{report.clipped} samples at full scale ({share:.2%}): clipped audio")
    if report.over_full_scale:
        warnings.append(f"{report.over_full_scale} float samples beyond full scale (peak {report.peak:.3g}): "
                        "stored as they are, not clipped (training normalises each crop)")
    if writer.rows_written == 0:
        warnings.append(
            f"shorter than one segment ({report.frames_read / info.sample_rate:.2f} s < "
            f"{settings.segment_seconds} s) and final_segment=drop: nothing stored"
        )
    if report.frames_read == 0:
        raise IngestFailure("decode", "no audio frames could be decoded")
    return StagedRecording(
        path=source.key,
        size_bytes=source.size_bytes,
        mtime_ns=source.mtime_ns,
        content_hash=digest,
        recording_id=rec_id,
        format=info.format,
        subtype=info.subtype,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frames=report.frames_read,
        duration_s=report.frames_read / info.sample_rate,
        start_time=start_time,
        start_time_source=time_source,
        site=site,
        partition_date=date,
        stored_sample_rate=out_rate,
        channel_policy=settings.channels,
        segment_count=writer.rows_written,
        audio_seconds=report.frames_read / info.sample_rate * len(stream_ids),
        staged_file=str(staged) if staged else None,
        dataset_file=f"segments/site={slug(site)}/date={date}/rec-{rec_id}.parquet",
        warnings=warnings,
        nonfinite_segments=flagged_nonfinite,
    )


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(stage, reason) of any exception raised while ingesting a file."""
    if isinstance(exc, IngestFailure):
        return exc.stage, exc.reason
    return "internal", f"{type(exc).__name__}: {exc}"

