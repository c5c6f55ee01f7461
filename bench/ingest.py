"""Ingest benchmark: how fast `ceta2vec ingest` turns recordings into Parquet, against raw decoding.

What it measures, in one run over the same corpus:

* raw decode: every corpus file read with soundfile in 2 s float32 blocks, one process, nothing
  else done with the samples: the floor any ingest has to pay;
* ingest: `ceta2vec ingest CORPUS --workspace <fresh>` as a subprocess (real Prefect flow,
  ephemeral server), wall time and peak RSS of that process and its children;
* Prefect's fixed start-up cost: the same command on one 1 s file, reported so that a
  steady-state rate can be shown beside the full-wall-time one.

Both rates are hours of audio per second of wall time. The corpus has just been written or read
when either runs, so both read from the page cache: this compares CPU cost, not disk speed.
The goals (ingest >= 0.5 x raw decode, peak RSS < 1 GB) are reported as PASS/FAIL lines; the
exit code is 0 whatever they say and non-zero only when something crashed.

The corpus (default bench/out/corpus, gitignored) is built from the shared hydrophone recordings:
real clips looped, shifted and re-gained into long WAV (PCM_16, PCM_24, FLOAT), FLAC and MP3
files at mixed rates, including a 20-minute 96 kHz 24-bit WAV and a stereo file, plus copies of
the shared MP3s. It is reused while its spec is unchanged.

Run:  .venv/bin/python bench/ingest.py  [--hours 1.0] [--corpus DIR] [--keep] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = ROOT / "bench" / "out"
SHARED_RECORDINGS = ROOT.parent / "shared" / "data" / "hydrophone"
CLI = Path(sys.executable).parent / "ceta2vec"

# Bump when the way corpus files are generated changes, so an old corpus is rebuilt.
CORPUS_VERSION = 1
CORPUS_SPEC_FILE = "corpus.json"
DECODE_BLOCK_SECONDS = 2.0
INGEST_TO_DECODE_GOAL = 0.5
# "1 GB" read as 1 GiB: ru_maxrss counts KiB, so MB below are MiB.
PEAK_RSS_GOAL_MB = 1024.0
STARTUP_FILE_SECONDS = 1.0


@dataclass(frozen=True)
class CorpusFile:
    """One generated file; `minutes` is its length when the corpus is 1 hour."""

    name: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    minutes: float


# 60 minutes at --hours 1.0, before the copied MP3s. Rates and encodings mirror what hydrophone
# recorders deliver, odd rates (44 kHz, 10.24 kHz) included; several medium files rather than one
# huge one so that the flow's parallel workers have something to share.
CORPUS_PLAN: tuple[CorpusFile, ...] = (
    CorpusFile("long-96k-pcm24.wav", "WAV", "PCM_24", 96_000, 1, 20.0),
    CorpusFile("rec-48k-pcm16-a.wav", "WAV", "PCM_16", 48_000, 1, 5.0),
    CorpusFile("rec-48k-pcm16-b.wav", "WAV", "PCM_16", 48_000, 1, 5.0),
    CorpusFile("rec-64k-pcm24.wav", "WAV", "PCM_24", 64_000, 1, 5.0),
    CorpusFile("rec-44k1-float.wav", "WAV", "FLOAT", 44_100, 1, 5.0),
    CorpusFile("rec-32k-pcm16.flac", "FLAC", "PCM_16", 32_000, 1, 5.0),
    CorpusFile("rec-44k-pcm24.flac", "FLAC", "PCM_24", 44_000, 1, 4.0),
    CorpusFile("rec-44k1-stereo-pcm16.wav", "WAV", "PCM_16", 44_100, 2, 5.0),
    CorpusFile("rec-48k-stereo.mp3", "MP3", "MPEG_LAYER_III", 48_000, 2, 3.0),
    CorpusFile("rec-22k05-pcm16.wav", "WAV", "PCM_16", 22_050, 1, 2.0),
    CorpusFile("rec-10k24-pcm16.wav", "WAV", "PCM_16", 10_240, 1, 1.0),
)
COPIED_MP3_DIR = "mp3-copies"


@dataclass(frozen=True)
class SourceClip:
    """A shared recording mixed to mono, at its own rate (the whole pool is ~10 minutes)."""

    name: str
    sample_rate: int
    samples: np.ndarray


@dataclass(frozen=True)
class DecodeResult:
    audio_seconds: float
    wall_s: float

    @property
    def hours_per_second(self) -> float:
        return self.audio_seconds / 3600 / self.wall_s


@dataclass(frozen=True)
class ProcessRun:
    returncode: int
    wall_s: float
    peak_rss_mb: float


class BenchError(RuntimeError):
    """Something the benchmark needs failed; the message says what and where the logs are."""


# --- corpus -----------------------------------------------------------------------------------


def corpus_spec(hours: float, recordings: Path) -> dict:
    """Everything the corpus content depends on; a stored spec equal to this one means reuse."""
    sources = sorted(
        (p.relative_to(recordings).as_posix(), p.stat().st_size) for p in audio_files(recordings)
    )
    return {
        "version": CORPUS_VERSION,
        "hours": hours,
        "plan": [asdict(f) for f in CORPUS_PLAN],
        "sources": sources,
    }


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".wav", ".flac", ".mp3"} and p.is_file())


def corpus_is_current(corpus: Path, spec: dict) -> bool:
    spec_path = corpus / CORPUS_SPEC_FILE
    if not spec_path.is_file():
        return False
    try:
        stored = json.loads(spec_path.read_text())
    except ValueError:
        return False
    if stored.get("spec") != json.loads(json.dumps(spec)):
        return False
    # A file that was edited or truncated since the build would skew both rates.
    return all((corpus / name).is_file() and (corpus / name).stat().st_size == size
               for name, size in stored.get("files", {}).items())


def load_source_pool(recordings: Path) -> list[SourceClip]:
    pool = []
    for path in audio_files(recordings):
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        if len(audio) == 0:
            continue
        mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
        pool.append(SourceClip(path.relative_to(recordings).as_posix(), int(rate), np.ascontiguousarray(mono)))
    if not pool:
        raise BenchError(f"no readable recordings under {recordings}")
    return pool


def clip_variant(clip: SourceClip, rate: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """The clip at `rate`, rotated to a random start and re-gained, as (frames, channels).

    Every copy differs, so no two corpus files share a content hash: ingest skips identical bytes
    and would then not decode them at all.
    """
    audio = clip.samples if clip.sample_rate == rate else soxr.resample(clip.samples, clip.sample_rate, rate, quality="HQ")
    audio = np.roll(audio, int(rng.integers(len(audio))))
    peak = float(np.max(np.abs(audio))) or 1.0
    # Stay clear of full scale so the corpus does not trip the clipping checks.
    gain = min(float(rng.uniform(0.4, 1.0)), 0.9 / peak)
    left = (audio * gain).astype(np.float32)
    if channels == 1:
        return left[:, None]
    # A second hydrophone a few milliseconds and a few dB away from the first.
    delay = int(rng.integers(1, max(2, rate // 200)))
    right = np.roll(left, delay) * np.float32(rng.uniform(0.5, 0.9))
    return np.stack([left, right], axis=1)


def write_corpus_file(spec: CorpusFile, path: Path, frames: int, pool: list[SourceClip]) -> None:
    """Loop the pool in shuffled order into `path`, one clip at a time (never the whole file in memory)."""
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    written = 0
    with sf.SoundFile(str(path), "w", spec.sample_rate, spec.channels, spec.subtype, format=spec.format) as out:
        while written < frames:
            for index in rng.permutation(len(pool)):
                block = clip_variant(pool[index], spec.sample_rate, spec.channels, rng)[: frames - written]
                out.write(block)
                written += len(block)
                if written >= frames:
                    break


def build_corpus(corpus: Path, hours: float, recordings: Path) -> bool:
    """Make sure `corpus` holds the corpus for `hours`; returns True when it was reused."""
    spec = corpus_spec(hours, recordings)
    if corpus_is_current(corpus, spec):
        return True
    if corpus.exists() and any(corpus.iterdir()) and not (corpus / CORPUS_SPEC_FILE).exists():
        raise BenchError(f"{corpus} is not empty and was not made by this benchmark; choose another --corpus")
    # Build beside the target and swap it in, so an interrupted build is never taken for a corpus.
    building = corpus.with_name(corpus.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    pool = load_source_pool(recordings)
    for spec_file in CORPUS_PLAN:
        frames = round(spec_file.minutes * 60 * hours * spec_file.sample_rate)
        print(f"  writing {spec_file.name} ({frames / spec_file.sample_rate / 60:.1f} min)", flush=True)
        write_corpus_file(spec_file, building / spec_file.name, frames, pool)
    copies = building / COPIED_MP3_DIR
    copies.mkdir()
    for mp3 in sorted(recordings.rglob("*.mp3")):
        shutil.copyfile(mp3, copies / mp3.relative_to(recordings).as_posix().replace("/", "_"))
    files = {p.relative_to(building).as_posix(): p.stat().st_size for p in audio_files(building)}
    (building / CORPUS_SPEC_FILE).write_text(json.dumps({"spec": spec, "files": files}, indent=2))
    shutil.rmtree(corpus, ignore_errors=True)
    building.rename(corpus)
    return False


def describe_corpus(files: list[Path]) -> str:
    infos = [sf.info(str(p)) for p in files]
    rates = sorted({i.samplerate for i in infos})
    kinds = sorted({f"{i.format} {i.subtype}" for i in infos})
    stereo = sum(i.channels > 1 for i in infos)
    size = sum(p.stat().st_size for p in files)
    return (f"{len(files)} files, {size / 1e6:.0f} MB; rates {rates[0]}-{rates[-1]} Hz; "
            f"{stereo} stereo; {', '.join(kinds)}")


# --- measurements -----------------------------------------------------------------------------


def measure_raw_decode(files: list[Path]) -> DecodeResult:
    """Decode every file in fixed-size float32 blocks into one reused buffer, nothing more."""
    frames_by_rate = 0.0
    start = time.perf_counter()
    for path in files:
        with sf.SoundFile(str(path)) as handle:
            buffer = np.empty((max(1, int(DECODE_BLOCK_SECONDS * handle.samplerate)), handle.channels), np.float32)
            frames = 0
            while True:
                block = handle.read(out=buffer)
                frames += len(block)
                if len(block) < len(buffer):
                    break
            frames_by_rate += frames / handle.samplerate
    return DecodeResult(frames_by_rate, time.perf_counter() - start)


def cli_env(prefect_home: Path) -> dict[str, str]:
    """A private Prefect home and its own ephemeral server: no state shared with other runs."""
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(prefect_home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    return env


def run_cli(args: list[str], env: dict[str, str], log_stem: Path) -> ProcessRun:
    """Run `ceta2vec ARGS`, output to log files; wall time and peak RSS of it and its children.

    os.wait4 gives this one child's rusage (including the Prefect server it reaps), where
    RUSAGE_CHILDREN would be the maximum over every child this script has started so far.
    """
    with open(log_stem.with_suffix(".stdout.log"), "wb") as out, open(log_stem.with_suffix(".stderr.log"), "wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen([str(CLI), *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    return ProcessRun(process.returncode, wall, usage.ru_maxrss / 1024)


def ingest(sources: list[Path], workspace: Path, workers: int | None, env: dict[str, str], log_stem: Path) -> ProcessRun:
    args = ["ingest", *map(str, sources), "--workspace", str(workspace)]
    if workers is not None:
        args += ["--workers", str(workers)]
    run = run_cli(args, env, log_stem)
    if run.returncode != 0:
        raise BenchError(f"ceta2vec ingest exited with {run.returncode}; see {log_stem}.*.log")
    return run


def workspace_status(workspace: Path, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [str(CLI), "status", "--workspace", str(workspace), "--format", "json"],
        env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"ceta2vec status exited with {result.returncode}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def write_startup_file(recordings: Path, path: Path) -> None:
    """A 1 s file, small enough that its ingest is nothing but the flow's fixed costs."""
    audio, rate = sf.read(str(audio_files(recordings)[0]), dtype="float32", always_2d=True)
    # np.resize repeats a clip shorter than the target length.
    sf.write(str(path), np.resize(audio[:, 0], int(STARTUP_FILE_SECONDS * rate)), rate, subtype="PCM_16")


# --- report -----------------------------------------------------------------------------------


def verdict(passed: bool, goal: str, measured: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {goal}: {measured}"


def print_report(
    corpus: Path, reused: bool, files: list[Path], decode: DecodeResult, startup: ProcessRun,
    run: ProcessRun, status: dict, workers: int | None,
) -> None:
    hours = decode.audio_seconds / 3600
    ingest_rate = hours / run.wall_s
    steady_wall = run.wall_s - startup.wall_s
    ratio = ingest_rate / decode.hours_per_second
    print()
    print("ceta2vec ingest benchmark")
    print(f"corpus          {corpus} ({'reused' if reused else 'built'})")
    print(f"                {describe_corpus(files)}")
    print(f"audio           {hours:.3f} h in the corpus")
    print(f"raw decode      {decode.wall_s:.2f} s -> {decode.hours_per_second:.4f} h/s "
          f"({decode.hours_per_second * 3600:.0f}x real time; soundfile, {DECODE_BLOCK_SECONDS:g} s float32 blocks, 1 process)")
    print(f"ingest          {run.wall_s:.2f} s -> {ingest_rate:.4f} h/s "
          f"({ingest_rate * 3600:.0f}x real time; full wall time, workers={workers if workers else 'default'})")
    print(f"prefect startup {startup.wall_s:.2f} s (ingest of one {STARTUP_FILE_SECONDS:g} s file into a fresh workspace)")
    steady_ratio = float("nan")
    if steady_wall > 0:
        steady_rate = hours / steady_wall
        steady_ratio = steady_rate / decode.hours_per_second
        print(f"ingest steady   {steady_wall:.2f} s -> {steady_rate:.4f} h/s "
              f"({steady_rate * 3600:.0f}x real time; excluding Prefect's fixed start-up)")
    print(f"ratio           steady-state ingest / raw decode = {steady_ratio:.3f}   "
          f"(full wall time: {ratio:.3f})")
    if steady_ratio > INGEST_TO_DECODE_GOAL:
        # full-wall ratio = H / (v_raw * (S + H / v_ingest)); solve for H at the goal
        break_even = INGEST_TO_DECODE_GOAL * decode.hours_per_second * startup.wall_s / (
            1 - INGEST_TO_DECODE_GOAL / steady_ratio)
        print(f"                the full-wall ratio reaches {INGEST_TO_DECODE_GOAL} from about {break_even:.1f} h of audio, "
              f"where the {startup.wall_s:.0f} s start-up is amortised")
    print(f"stored          {status['bytes_per_audio_hour'] / 1e6:.1f} MB per audio hour "
          f"({status['stored_bytes'] / 1e6:.1f} MB for {status['segment_audio_hours']:.3f} h of segments, "
          f"{status['config'].get('sample_rate', '?')} Hz)")
    print(f"peak RSS        {run.peak_rss_mb:.0f} MB (ingest process and its children)")
    if abs(status["recording_hours"] - hours) > 0.001 * hours or status["errors"] or status["duplicates"]:
        print(f"WARNING         workspace holds {status['recording_hours']:.3f} h, {status['errors']} error(s), "
              f"{status['duplicates']} duplicate(s): not all of the corpus was decoded")
    print(verdict(steady_ratio >= INGEST_TO_DECODE_GOAL,
                  f"steady-state ingest >= {INGEST_TO_DECODE_GOAL} x raw decode", f"{steady_ratio:.3f}"))
    print(verdict(ratio >= INGEST_TO_DECODE_GOAL,
                  f"full-wall ingest (with start-up) >= {INGEST_TO_DECODE_GOAL} x raw decode", f"{ratio:.3f}"))
    print(verdict(run.peak_rss_mb < PEAK_RSS_GOAL_MB, f"peak RSS < {PEAK_RSS_GOAL_MB:.0f} MB", f"{run.peak_rss_mb:.0f} MB"))


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="Audio in the generated corpus (default 1.0).")
    parser.add_argument("--corpus", type=Path, default=BENCH_OUT / "corpus",
                        help="Corpus folder, built if missing or made for another spec (default bench/out/corpus).")
    parser.add_argument("--keep", action="store_true", help="Keep the ingest workspaces, Prefect home and logs.")
    parser.add_argument("--workers", type=int, default=None, help="Passed to `ceta2vec ingest --workers`.")
    parser.add_argument("--recordings", type=Path, default=SHARED_RECORDINGS,
                        help=f"Real recordings the corpus is made from (default {SHARED_RECORDINGS}).")
    args = parser.parse_args(argv)
    if args.hours <= 0:
        parser.error("--hours must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = args.corpus.resolve()
    print(f"corpus: {corpus}", flush=True)
    reused = build_corpus(corpus, args.hours, args.recordings)
    files = audio_files(corpus)

    print("raw decode ...", flush=True)
    decode = measure_raw_decode(files)

    BENCH_OUT.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH_OUT))
    env = cli_env(run_dir / "prefect-home")
    startup_dir = run_dir / "startup-source"
    startup_dir.mkdir()
    startup_file = startup_dir / "startup.wav"
    write_startup_file(args.recordings, startup_file)

    # The first flow run in a new Prefect home also creates its database; that one-off cost is
    # neither the start-up every ingest pays nor part of the steady state.
    print("prefect warm-up and start-up cost ...", flush=True)
    ingest([startup_file], run_dir / "ws-warmup", args.workers, env, run_dir / "warmup")
    startup = ingest([startup_file], run_dir / "ws-startup", args.workers, env, run_dir / "startup")

    print("ingest ...", flush=True)
    workspace = run_dir / "ws-corpus"
    run = ingest([corpus], workspace, args.workers, env, run_dir / "ingest")
    status = workspace_status(workspace, env)

    print_report(corpus, reused, files, decode, startup, run, status, args.workers)
    if args.keep:
        print(f"kept            {run_dir} (workspaces, Prefect home, logs)")
    else:
        shutil.rmtree(run_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/ingest.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
