"""`similar --where` filters on the neighbours' labels and site, and a filter naming a column that
does not exist gets one line listing the columns that do (the session's tiny workspace, read-only)."""

from __future__ import annotations

import pytest

from tasks.catalog.search import similar
from tasks.workspace import database
from tasks.workspace.database import WorkspaceError


def _query_segment(conn) -> str:
    return conn.execute("SELECT min(segment_id) FROM segment_embeddings WHERE model_id = 'rep@1'").fetchone()[0]


def _labelled(conn, *values: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT DISTINCT segment_id FROM segment_labels JOIN segment_embeddings USING (segment_id) "
        "WHERE label_value IN (SELECT unnest(?)) AND model_id = 'rep@1'", [list(values)]).fetchall()}


def test_where_filters_on_label_and_site_columns(tiny_workspace):
    with database.reading(tiny_workspace) as conn:
        seg = _query_segment(conn)
        clicks = _labelled(conn, "clicks")
        found = similar(conn, seg, 1000, None, "rep@1", where="label_value = 'clicks'")
        assert clicks and {r[0] for r in found.rows} == clicks  # each neighbour once, however many labels it has
        assert all("sound=clicks" in r[found.columns.index("labels")] for r in found.rows)

        both = similar(conn, seg, 1000, None, "rep@1", where="label_column = 'sound' AND label_value IN ('tone', 'whistle')")
        assert {r[0] for r in both.rows} == _labelled(conn, "tone", "whistle") != clicks

        (site,) = conn.execute("SELECT site FROM segments WHERE segment_id = ?", [seg]).fetchone()
        at_site = similar(conn, seg, 1000, None, "rep@1", where=f"site IS NOT DISTINCT FROM {site!r}" if site
                          else "site IS NULL")
        everything = similar(conn, seg, 1000, None, "rep@1")
        assert at_site.rows[0][0] == seg and len(at_site.rows) == sum(1 for r in everything.rows if r[3] == site)
        assert len({r[0] for r in everything.rows}) == len(everything.rows)  # the label join adds no duplicates


def test_an_unknown_column_names_the_columns_a_filter_can_use(tiny_workspace):
    with database.reading(tiny_workspace) as conn:
        seg = _query_segment(conn)
        with pytest.raises(WorkspaceError) as caught:
            similar(conn, seg, 5, None, "rep@1", where="label_valu = 'humpback'")
    message = str(caught.value)
    assert "\n" not in message and "label_valu" in message
    listed = message.split("the filter can use the columns ", 1)[1].split(", ")
    assert {"segment_id", "file_name", "start_s", "site", "distance", "label_column", "label_value"} <= set(listed)


def test_cli_prints_the_unknown_column_error_in_one_line(tiny_workspace, capsys):
    from flows.cli.commands import main

    with database.reading(tiny_workspace) as conn:
        seg = _query_segment(conn)
    assert main(["similar", seg, "--where", "species = 'humpback'", "--workspace", str(tiny_workspace.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "species" in err and "label_value" in err and "site" in err
