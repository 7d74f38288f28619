"""make demo's corpus: PostgreSQL manual pages turned into text (no database needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from pgtest import ROOT


def load_demo_module():
    spec = importlib.util.spec_from_file_location("pgseek_demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


demo = load_demo_module()

# The shape of Debian's postgresql-doc pages (DocBook XSL output), cut down.
MANUAL_PAGE = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "">
<html xmlns="http://www.w3.org/1999/xhtml"><head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>CREATE INDEX</title><link rel="stylesheet" type="text/css" href="stylesheet.css" />
<style>body { color: black }</style></head>
<body id="docContent"><div class="navheader"><table width="100%" summary="Navigation header">
<tr><th colspan="5" align="center">CREATE INDEX</th></tr>
<tr><td><a accesskey="p" href="sql-creategroup.html" title="CREATE GROUP">Prev</a> </td>
<td><a accesskey="u" href="sql-commands.html" title="SQL&#160;Commands">Up</a></td>
<th width="60%" align="center">SQL Commands</th>
<td><a accesskey="h" href="index.html" title="PostgreSQL 15.20 Documentation">Home</a></td>
</tr></table><hr /></div>
<div class="refentry"><div class="refnamediv"><h2><span class="refentrytitle">CREATE INDEX</span>
</h2><p>CREATE INDEX &#8212; define a new index</p></div>
<div class="toc"><dl><dt><a href="#x">Description</a></dt></dl></div>
<div class="refsynopsisdiv"><h2>Synopsis</h2><pre class="synopsis">
CREATE [ UNIQUE ] INDEX [ CONCURRENTLY ] <em class="replaceable"><code>name</code></em>
    ON <em class="replaceable"><code>table_name</code></em> ( column_name )
</pre></div><div class="refsect1"><h2>Description</h2><p>
   <code class="command">CREATE INDEX</code> constructs an index on the specified
   column(s) &amp; builds it <span class="emphasis"><em>without</em></span> locks
   when asked.
  </p><table><tr><th>Method</th><th>Unique</th></tr><tr><td>btree</td><td>yes</td></tr></table>
</div></div>
<div class="navfooter"><hr /><table width="100%" summary="Navigation footer"><tr>
<td><a accesskey="p" href="sql-creategroup.html">Prev</a></td>
<td><a accesskey="h" href="index.html">Home</a></td></tr></table></div></body></html>
"""


@pytest.fixture(scope="module")
def page():
    return demo.html_to_page("sql-createindex.html", MANUAL_PAGE)


def test_the_title_and_the_chapter_come_from_the_page(page):
    assert page.title == "CREATE INDEX"
    assert page.chapter == "SQL Commands"  # the "Up" link, its no-break space normalized
    assert page.metadata == {
        "source": "postgresql-manual",
        "page": "sql-createindex.html",
        "title": "CREATE INDEX",
        "chapter": "SQL Commands",
    }


@pytest.mark.parametrize(
    ("up_link_title", "chapter"),
    [
        ("Chapter\u00a011.\u00a0Indexes", "Indexes"),
        ("Part II. The SQL Language", "The SQL Language"),
        ("9.21.1. Aggregate Functions", "Aggregate Functions"),
        ("F.12. dblink", "dblink"),
        ("PostgreSQL 15.20 Documentation", "PostgreSQL 15.20 Documentation"),
    ],
)
def test_chapter_names_lose_their_numbers(up_link_title, chapter):
    assert demo.chapter_name(up_link_title) == chapter


def test_navigation_head_style_and_tables_of_contents_are_dropped(page):
    for navigation in ("Prev", "Home", "Navigation", "PostgreSQL 15.20", "color: black"):
        assert navigation not in page.text
    assert "Description\n\nCREATE INDEX constructs" in page.text  # the toc's "Description" went


def test_blocks_become_paragraphs_with_whitespace_collapsed(page):
    paragraphs = page.text.split("\n\n")
    assert paragraphs[:3] == ["CREATE INDEX", "CREATE INDEX — define a new index", "Synopsis"]
    assert (
        "CREATE INDEX constructs an index on the specified column(s) & builds it without "
        "locks when asked." in paragraphs
    )


def test_preformatted_text_keeps_its_lines(page):
    assert (
        "CREATE [ UNIQUE ] INDEX [ CONCURRENTLY ] name\n    ON table_name ( column_name )"
        in page.text
    )


def test_table_rows_are_lines_with_their_cells_apart(page):
    assert "Method Unique" in page.text
    assert "btree yes" in page.text


def test_an_unclosed_page_still_gives_its_text():
    page = demo.html_to_page("x.html", "<html><head><title>T</title></head><body><p>one <b>two")
    assert (page.title, page.text) == ("T", "one two")


def test_page_sets_and_patterns_select_files(tmp_path: Path):
    for name in ("sql-delete.html", "sql-insert.html", "tutorial-window.html", "index.html"):
        (tmp_path / name).write_text("<html></html>")
    chosen = demo.select_pages(tmp_path, demo.page_patterns("sql"))
    assert [p.name for p in chosen] == ["sql-delete.html", "sql-insert.html"]
    chosen = demo.select_pages(tmp_path, demo.page_patterns("tutorial-*.html, sql-d*.html"))
    assert [p.name for p in chosen] == ["sql-delete.html", "tutorial-window.html"]
    assert len(demo.select_pages(tmp_path, demo.page_patterns("all"))) == 4
