"""A user's mistake is one line on stderr (exit 2), found before a flow command starts its Prefect
server, with the nearest name suggested for a mistyped command, option or choice.

In-process: `main` is what the installed command runs. Nothing points Prefect at a server (conftest
unsets PREFECT_API_URL), so a flow command that got past its checks would start one of its own and
log it; fd-level capture sees that line wherever Prefect's handlers write."""

import pytest

from flows.cli.commands import main


def run(capfd, *argv) -> tuple[int, list[str]]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:  # argparse's errors end the parse
        code = done.code
    err = capfd.readouterr().err
    assert "Prefect server" not in err, err[-3000:]
    return code, err.splitlines()


def one_error(capfd, *argv) -> str:
    code, lines = run(capfd, *argv)
    assert code == 2 and len(lines) == 1, (code, lines[-20:])
    return lines[0]


@pytest.mark.parametrize("command", ["ingest", "run"])
def test_a_missing_ingest_folder_fails_before_a_server_and_creates_nothing(capfd, tmp_path, command):
    line = one_error(capfd, command, tmp_path / "no-such-folder", "--workspace", tmp_path / "ws")
    assert line.startswith("ceta2vec: error: nothing to ingest") and str(tmp_path / "no-such-folder") in line
    assert not (tmp_path / "ws").exists()


def test_an_unreadable_labels_file_fails_before_a_server(capfd, tmp_path, tiny_workspace):
    line = one_error(capfd, "ingest", tiny_workspace.root.parent / "rec", "--labels", tmp_path / "nope.csv",
                     "--workspace", tmp_path / "ws")
    assert "nope.csv: cannot open labels file" in line


@pytest.mark.parametrize(("argv", "said"), [
    (["report", "--model", "tiny@9"], "no embedding model 'tiny@9' in this workspace (embedded: rep@1)"),
    (["report", "--layer", "7"], "rep@1 has segment vectors for layers 0, 1, 2, not layer 7"),
    (["report", "--label-column", "species"], "no segment has a 'species' label (label columns: sound)"),
    (["evaluate", "--label-column", "sound", "--model", "rep@2"], "no embedding model 'rep@2'"),
    (["evaluate", "--label-column", "species"], "no segment has a 'species' label (label columns: sound)"),
    (["embed", "--run", "nope"], "run 'nope' has no checkpoint"),
    (["embed", "--layers", "0", "9"], "rep@1 has layers 0..2; asked for [9]"),
    (["pretrain", "--run", "fresh", "--init-from", "/no/such/export"], "--init-from /no/such/export: no checkpoint"),
    (["ingest", "rec", "--sample-rate", "8000"], "sample_rate: workspace has 16000, asked for 8000"),
])
def test_a_workspace_that_lacks_what_was_asked_for_fails_before_a_server(capfd, tiny_workspace, argv, said):
    if argv[0] == "ingest":
        argv = ["ingest", tiny_workspace.root.parent / "rec", *argv[2:]]
    line = one_error(capfd, *argv, "--workspace", tiny_workspace.root)
    assert line.startswith("ceta2vec: error: ") and said in line, line


def test_a_bad_choice_is_one_line_naming_the_choices(capfd):
    line = one_error(capfd, "pretrain", "--preset", "huge")
    assert line == "ceta2vec pretrain: error: argument --preset: invalid choice 'huge' (choose from 'tiny', 'small', 'base')"
    line = one_error(capfd, "similar", "some-segment", "--pooling", "maen")
    assert line.endswith("invalid choice 'maen' (choose from 'mean', 'std', 'max'); did you mean 'mean'?"), line


def test_a_mistyped_command_or_option_gets_the_nearest_suggested(capfd):
    assert one_error(capfd, "ingset", "rec") == "ceta2vec: error: unknown command 'ingset'; did you mean 'ingest'?"
    assert one_error(capfd, "ingest", "rec", "--worksapce", "ws") == \
        "ceta2vec ingest: error: unknown option '--worksapce'; did you mean '--workspace'?"
    assert one_error(capfd, "sql", "SELECT 1", "--max-raws=5") == \
        "ceta2vec sql: error: unknown option '--max-raws'; did you mean '--max-rows'?"
    line = one_error(capfd, "frobnicate")
    assert line.startswith("ceta2vec: error: unknown command 'frobnicate' (commands: run, ingest,"), line
    assert one_error(capfd, "status", "extra") == "ceta2vec status: error: unexpected argument 'extra'"
