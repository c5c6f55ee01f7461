"""A labels CSV with bad rows: each bad row is a warning naming the file and line, the good rows
and all the audio go in; a file that cannot be a labels CSV at all is refused before anything is
written, in one line naming the file."""

from __future__ import annotations

import pytest
from hardening_cli import api_env, cli, error_line  # noqa: F401 - api_env is a fixture
from signals import noise, write

from tasks.ingest.labels import LabelsError, read_labels
from tasks.workspace import database

BAD_ROWS = (
    "file,start_s,end_s,species\n"
    "a.wav,,,orca\n"                    # 2: good
    "a.wav,1,2,orca,extra\n"            # 3: ragged (one field too many)
    "a.wav,5\n"                         # 4: ragged (too few)
    "b.wav,8,3,humpback\n"              # 5: end before start
    ",,,sperm\n"                        # 6: no file
    "b.wav,nan,4,humpback\n"            # 7: not a finite number
    "b.wav,2,,humpback\n"               # 8: start without end
    "\n"                                # 9: blank: no warning
    "b.wav,0,4,humpback\n"              # 10: good
)


def test_bad_rows_are_warnings_with_file_and_line_and_good_rows_are_kept(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(BAD_ROWS)
    warnings: list[str] = []
    rows = read_labels(path, warnings)
    assert [(r.file, r.label_value, r.start_s, r.end_s) for r in rows] == [
        ("a.wav", "orca", None, None), ("b.wav", "humpback", 0.0, 4.0)]
    assert [w.split(": ")[1] for w in warnings] == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8"]
    assert all(w.startswith(f"{path}: line ") and w.endswith("row skipped") for w in warnings)
    assert "5 fields where the header has 4" in warnings[0] and "end_s (3) must be after start_s (8)" in warnings[2]
    assert "'file' cell is empty" in warnings[3]


@pytest.mark.parametrize("content, words", [
    ("file,species,species\na.wav,orca,humpback\n", "'species' appear more than once"),
    ("file,species\na.wav,orca\nb.wav,caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    ("name,species\na.wav,orca\n", "needs a 'file' column"),
    ("", "needs a 'file' column"),
])
def test_a_file_that_is_no_labels_csv_is_refused_in_words_naming_it(tmp_path, content, words):
    path = tmp_path / "labels.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LabelsError) as refused:
        read_labels(path)
    assert str(refused.value).startswith(f"{path}: ") and words in str(refused.value), refused.value
    assert "\n" not in str(refused.value)


@pytest.mark.usefixtures("prefect_server")
def test_an_ingest_with_bad_label_rows_takes_all_audio_and_the_good_labels(tmp_path, workspace):
    from flows.ingest import ingest
    from schemas.settings import IngestSettings

    write(tmp_path / "rec" / "a.wav", noise(12.0, 8000), 8000, "PCM_16")
    write(tmp_path / "rec" / "b.wav", noise(5.0, 8000, seed=1), 8000, "PCM_16")
    labels = tmp_path / "labels.csv"
    labels.write_text(BAD_ROWS)
    result = ingest(IngestSettings(sources=[str(tmp_path / "rec")], workspace=str(workspace.root), labels=str(labels)))
    assert result.ingested == 2 and len(result.label_warnings) == 6
    with database.reading(workspace) as conn:
        stored = conn.execute("""SELECT r.file_name, l.label_value, l.start_s, l.end_s FROM labels l
                                 JOIN recordings r USING (recording_id) ORDER BY 1""").fetchall()
    assert stored == [("a.wav", "orca", None, None), ("b.wav", "humpback", 0.0, 4.0)]


def test_a_refused_labels_csv_leaves_no_workspace_behind(tmp_path, api_env):
    write(tmp_path / "rec" / "a.wav", noise(1.0, 8000), 8000, "PCM_16")
    (tmp_path / "labels.csv").write_text("file,species,species\na.wav,orca,humpback\n")
    done = cli(api_env, "ingest", tmp_path / "rec", "--labels", tmp_path / "labels.csv", "--workspace", tmp_path / "ws")
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(tmp_path / "labels.csv") in error_line(done.stderr) and not (tmp_path / "ws").exists()
