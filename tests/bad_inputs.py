"""A corpus of hostile inputs for the ingest, generated on the spot: broken, truncated and
disguised audio, things that are not files, names that are not UTF-8 or carry markup, SQL or
newlines, and good recordings among them that must all go in."""

from __future__ import annotations

import os
import socket
import struct
import zipfile
from pathlib import Path

import numpy as np
from signals import noise, tone, write

RATE = 16000


def _name(folder: Path, raw: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + raw))


def _wav_header(channels: int, rate: int, bits: int, data_bytes: int) -> bytes:
    block = min(channels * bits // 8, 0xFFFF)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels,
            rate, (rate * block) & 0xFFFFFFFF, block, bits) + b"data" + struct.pack("<I", data_bytes))


def make_corpus(folder: Path) -> dict[str, str]:
    """Writes the corpus; returns {printable file name: expectation}, where an expectation is
    'ok', 'duplicate', 'error:<words>', 'warning:<words>' or 'any' (a row of some kind)."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def good(name: str, samples=None, rate=RATE, subtype="PCM_16", fmt=None, raw: bytes | None = None) -> Path:
        path = folder / (name or "tmp-raw.wav")
        write(path, noise(1.5, rate, seed=len(expect)) if samples is None else samples, rate, subtype, fmt)
        if raw is not None:  # libsndfile is given a str; the name that is not UTF-8 comes after
            path = path.rename(_name(folder, raw))
        return path

    def cut(name: str, source: Path, keep: float) -> None:
        data = source.read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
        source.unlink()

    # good recordings, some under hostile names: all must be ingested
    for name in ["plain.wav", "UPPER.WAV", ".hidden.wav", "with space é 🐋.flac", "'; DROP TABLE recordings; --.wav",
                 "<img src=x onerror=alert(1)>.wav", "a" * 200 + ".wav", "$(touch pwned).ogg", "line\nbreak.wav",
                 "tab\there.aiff", "back\\slash.wav"]:
        subtype = {".ogg": "VORBIS", ".flac": None}.get(Path(name).suffix, "PCM_16")
        good(name, subtype=subtype)
        expect[name] = "ok"
    good("", raw=b"latin1-\xe9t\xe9.wav")
    expect["latin1-\\xe9t\\xe9.wav"] = "ok"
    good("u8.wav", noise(1.0, 8000, 0.1), 8000, "PCM_U8")
    expect["u8.wav"] = "ok"
    good("silent.wav", np.zeros(RATE, np.float32))
    expect["silent.wav"] = "ok"
    good("one sample.wav", np.zeros(1, np.float32))
    expect["one sample.wav"] = "ok"
    good("stereo24.wav", np.stack([tone(300, 1.0, RATE), tone(900, 1.0, RATE)], 1), subtype="PCM_24")
    expect["stereo24.wav"] = "ok"
    good("rf.w64", fmt="W64")
    expect["rf.w64"] = "ok"
    (folder / "zz copy of plain.wav").write_bytes((folder / "plain.wav").read_bytes())
    expect["zz copy of plain.wav"] = "duplicate"

    # recordings with a flaw that is a warning, not a failure
    nan = noise(2.0, RATE)
    nan[100:200] = np.nan
    good("nan.wav", nan, subtype="FLOAT")
    expect["nan.wav"] = "warning:non-finite"
    good("clipped.wav", np.clip(tone(440, 1.0, RATE, 3.0), -1, 1), subtype="FLOAT")
    expect["clipped.wav"] = "warning:clipped"
    for name, fmt, subtype in [("cut.wav", None, "PCM_16"), ("cut.flac", None, None), ("cut.ogg", None, "VORBIS"),
                               ("cut.aiff", None, "PCM_16"), ("cut.mp3", "MP3", "MPEG_LAYER_III")]:
        cut(name, good("whole-" + name, noise(20.0, RATE), subtype=subtype, fmt=fmt), 0.6)
        expect[name] = "warning:truncated"
    (folder / "declares more.wav").write_bytes(_wav_header(1, RATE, 16, 10_000_000) + b"\x01\x00" * 4000)
    expect["declares more.wav"] = "warning:truncated"
    (folder / "declares less.wav").write_bytes(_wav_header(1, RATE, 16, 100) + b"\x01\x00" * 32000)
    expect["declares less.wav"] = "warning:header declares less than the file holds"

    # broken or disguised: one error row each
    (folder / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = "error:empty (0 bytes)"
    (folder / "notes.wav").write_text("field notes, not audio\n" * 20)
    expect["notes.wav"] = "error:not a readable audio file"
    (folder / "zz copy of notes.wav").write_bytes((folder / "notes.wav").read_bytes())
    expect["zz copy of notes.wav"] = "error:not a readable audio file"  # the same failure, its own row
    (folder / "cut header.wav").write_bytes(_wav_header(1, RATE, 16, 3200)[:30])
    expect["cut header.wav"] = "error:not a readable audio file"
    (folder / "header only.wav").write_bytes(_wav_header(1, RATE, 16, 0))
    expect["header only.wav"] = "error"
    (folder / "zero rate.wav").write_bytes(_wav_header(1, 0, 16, 3200) + b"\x00" * 3200)
    expect["zero rate.wav"] = "error"
    (folder / "zero channels.wav").write_bytes(_wav_header(0, RATE, 16, 3200) + b"\x00" * 3200)
    expect["zero channels.wav"] = "error"
    (folder / "many channels.wav").write_bytes(_wav_header(65535, RATE, 16, 3200) + b"\x00" * 3200)
    expect["many channels.wav"] = "error"
    (folder / "odd bits.wav").write_bytes(_wav_header(1, RATE, 13, 3200) + b"\x00" * 3200)
    expect["odd bits.wav"] = "any"
    with zipfile.ZipFile(folder / "archive.flac", "w") as archive:
        archive.writestr("a.txt", "zip, not flac")
    expect["archive.flac"] = "error:not a readable audio file"
    (folder / "image.aiff").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    expect["image.aiff"] = "error:not a readable audio file"
    (folder / "random.mp3").write_bytes(np.random.default_rng(1).bytes(4000))
    expect["random.mp3"] = "any"
    (folder / "junk.caf").write_bytes(b"caff" + bytes(100))
    expect["junk.caf"] = "error:not a readable audio file"
    (folder / "very early cut.ogg").write_bytes(_ogg_head(folder))
    expect["very early cut.ogg"] = "error"
    (folder / "memo.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(100))
    expect["memo.m4a"] = "error:unsupported format '.m4a'"
    (folder / "voice.opus").write_bytes(b"OggS" + bytes(100))
    expect["voice.opus"] = "error:unsupported format '.opus'"
    _name(folder, b"bad-\xff\xfe.wav").write_bytes(b"not audio at all" * 10)
    expect["bad-\\xff\\xfe.wav"] = "error:not a readable audio file"

    # not regular files: reported, never opened for reading
    os.mkfifo(folder / "pipe.wav")
    expect["pipe.wav"] = "error:FIFO"
    (folder / "zeros.wav").symlink_to("/dev/zero")
    expect["zeros.wav"] = "error:character device"
    (folder / "nowhere.wav").symlink_to(folder / "gone.wav")
    expect["nowhere.wav"] = "error:link to nothing"
    (folder / "loop1.wav").symlink_to(folder / "loop2.wav")
    (folder / "loop2.wav").symlink_to(folder / "loop1.wav")
    expect["loop1.wav"] = expect["loop2.wav"] = "error:Too many levels of symbolic links"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.wav"))
    server.close()
    expect["sock.wav"] = "error:socket"
    (folder / "folder.wav").mkdir()
    good("folder.wav/inside.wav")
    expect["inside.wav"] = "ok"  # a folder named like a recording that holds one is just a folder
    (folder / "empty folder.wav").mkdir()
    expect["empty folder.wav"] = "error:a folder, not an audio file"
    (folder / "zz link to plain.wav").symlink_to(folder / "plain.wav")
    expect["zz link to plain.wav"] = "duplicate"
    return expect


def _ogg_head(folder: Path) -> bytes:
    path = write(folder / "tmp-head.ogg", noise(3.0, RATE), RATE, "VORBIS")
    data = path.read_bytes()
    path.unlink()
    return data[: 4000]
