"""pgseek's quick start (`make demo`): load part of the PostgreSQL manual, embed it inside
PostgreSQL, and run a few hybrid searches showing their score breakdown and timings.

The corpus is Debian's postgresql-doc-N package (installed by `make install`): HTML pages
under /usr/share/doc/postgresql-doc-N/html, turned into text with the standard library and
loaded with pgseek.ingest() (one source per page, ~256-token chunk documents). Re-running
skips pages already loaded, so a second run only searches.

DEMO_PAGES chooses the pages (embedding 256-token chunks runs at ~13/s on 2 cores):
  default  the user's guide: the tutorial, the chapters on data definition, queries,
           indexes, full text search, concurrency, performance and maintenance, and the
           everyday SQL commands (~100 pages, ~960 chunks: 1-2 minutes)
  sql      the SQL command reference (~190 pages, ~1,200 chunks: about 2 minutes)
  all      the whole manual (~1,150 pages, ~7,800 chunks: about 10 minutes)
  PATTERNS comma-separated glob patterns, e.g. 'tutorial-*.html,indexes*.html'
Sets add up: pages already loaded stay, and another DEMO_PAGES only loads what is new.

Usage: DATABASE_URL=postgresql://... scripts/demo.py   (or: make demo)
Environment: DATABASE_URL, DEMO_PAGES, DEMO_DOC_DIR (the html directory), PGSEEK_PG_MAJOR
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

SOURCE = "postgresql-manual"
EMBED_BATCH = 256
MIN_PAGE_CHARS = 200  # chapter pages that are only a table of contents say nothing
STALL_SECONDS = 300
# The user's guide: the tutorial; the chapters on data definition, queries, indexes,
# full text search, concurrency, performance and routine maintenance; and the reference
# pages of the everyday SQL commands. About 960 chunks: 1-2 minutes of embedding on 2
# cores (256-token chunks embed at about 13 per second there).
GUIDE_PAGES = (
    "tutorial*.html",
    "ddl*.html",
    "dml*.html",
    "queries*.html",
    "indexes*.html",
    "textsearch*.html",
    "mvcc*.html",
    "transaction-iso.html",
    "explicit-locking.html",
    "applevel-consistency.html",
    "locking-indexes.html",
    "performance-tips.html",
    "using-explain.html",
    "planner-stats.html",
    "explicit-joins.html",
    "populate.html",
    "non-durability.html",
    "maintenance.html",
    "routine-*.html",
    "logfile-maintenance.html",
)
EVERYDAY_COMMANDS = tuple(
    f"sql-{command}.html"
    for command in (
        "select",
        "insert",
        "update",
        "delete",
        "createtable",
        "createindex",
        "vacuum",
        "explain",
    )
)
PAGE_SETS = {
    "default": GUIDE_PAGES + EVERYDAY_COMMANDS,
    "sql": ("sql-*.html",),  # the SQL command reference: about 1,200 chunks
    "all": ("*.html",),  # the whole manual: about 7,800 chunks
}

BLOCK_TAGS = frozenset(
    {"p", "div", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "blockquote"}
    | {"table", "tr", "ul", "ol", "li", "dl", "dt", "dd"}
)
CELL_TAGS = frozenset({"td", "th"})
SECTION_NUMBER = re.compile(r"^(?:(?:Chapter|Part|Appendix) )?[0-9A-Z]+(?:\.[0-9]+)*\. ")
# Navigation around every page of the manual, and tables of contents.
SKIPPED_CLASSES = frozenset({"navheader", "navfooter", "toc"})
SKIPPED_TAGS = frozenset({"head", "script", "style"})


# --- HTML to text ----------------------------------------------------------------------


class ManualPageParser(HTMLParser):
    """Collects a DocBook HTML page's title, parent chapter and text blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.chapter = ""
        self.blocks: list[str] = []
        self._line: list[str] = []
        self._in_title = False
        self._pre_depth = 0
        self._skipped_tag = ""
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag == "a" and attributes.get("accesskey") == "u":
            self.chapter = attributes.get("title") or ""
        if self._skip_depth:
            self._skip_depth += tag == self._skipped_tag
            return
        classes = set((attributes.get("class") or "").split())
        if tag in SKIPPED_TAGS or classes & SKIPPED_CLASSES:
            self._skipped_tag, self._skip_depth = tag, 1
            return
        self._start_block_or_cell(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._skip_depth:
            self._skip_depth -= tag == self._skipped_tag
            return
        if tag in BLOCK_TAGS:
            self._end_block()
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip_depth:
            self._line.append(data if self._pre_depth else re.sub(r"\s+", " ", data))

    def close(self) -> None:
        super().close()
        self._end_block()  # text after the last block tag of a truncated page

    def _start_block_or_cell(self, tag: str) -> None:
        if tag in BLOCK_TAGS:
            self._end_block()
        if tag == "pre":
            self._pre_depth += 1
        elif tag in CELL_TAGS:
            self._line.append(" ")

    def _end_block(self) -> None:
        text = "".join(self._line)
        self._line = []
        text = text.strip("\n").rstrip() if self._pre_depth else text.strip()
        if text:
            self.blocks.append(text)


@dataclass
class ManualPage:
    name: str
    title: str
    chapter: str
    text: str

    @property
    def metadata(self) -> dict[str, str]:
        return {"source": SOURCE, "page": self.name, "title": self.title, "chapter": self.chapter}


def html_to_page(name: str, html: str) -> ManualPage:
    """A manual page as text: title, parent chapter, and its blocks as paragraphs."""
    parser = ManualPageParser()
    parser.feed(html)
    parser.close()
    title = re.sub(r"\s+", " ", parser.title).strip()
    return ManualPage(name, title, chapter_name(parser.chapter), "\n\n".join(parser.blocks))


def chapter_name(up_link_title: str) -> str:
    """'Chapter 11. Indexes' -> 'Indexes', 'F.12. dblink' -> 'dblink': names to filter on."""
    name = re.sub(r"\s+", " ", up_link_title).strip()
    return SECTION_NUMBER.sub("", name)


def read_page(path: Path) -> ManualPage:
    return html_to_page(path.name, path.read_text(encoding="utf-8", errors="replace"))


# --- choosing pages --------------------------------------------------------------------


def manual_directory() -> Path:
    configured = os.environ.get("DEMO_DOC_DIR")
    if configured:
        return Path(configured)
    major = os.environ.get("PGSEEK_PG_MAJOR", "15")
    return Path(f"/usr/share/doc/postgresql-doc-{major}/html")


def page_patterns(selection: str) -> tuple[str, ...]:
    if selection in PAGE_SETS:
        return PAGE_SETS[selection]
    return tuple(p.strip() for p in selection.split(",") if p.strip())


def select_pages(directory: Path, patterns: Iterable[str]) -> list[Path]:
    chosen = {path for pattern in patterns for path in directory.glob(pattern)}
    return sorted(path for path in chosen if path.is_file())


# --- loading and embedding -------------------------------------------------------------


def log(message: str = "") -> None:
    print(message, flush=True)


def loaded_page_names(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "select metadata->>'page' from pgseek.sources where metadata @> %s",
        [Jsonb({"source": SOURCE})],
    ).fetchall()
    return {page for (page,) in rows}


def load_pages(conn: psycopg.Connection, paths: list[Path]) -> int:
    """Ingests the pages not loaded yet, one transaction each; returns the chunks queued."""
    already = loaded_page_names(conn)
    pending = [read_page(path) for path in paths if path.name not in already]
    pages = [page for page in pending if len(page.text) >= MIN_PAGE_CHARS]
    skipped = len(pending) - len(pages)
    note = f", {skipped} near-empty tables of contents skipped" if skipped else ""
    log(
        f"corpus: {len(paths)} pages of the PostgreSQL manual selected, "
        f"{len(paths) - len(pending)} already loaded{note}"
    )
    if not pages:
        return 0
    started, chunks = time.monotonic(), 0
    for number, page in enumerate(pages, 1):
        chunks += ingest(conn, page)
        if number % 50 == 0 or number == len(pages):
            log(f"  loaded {number:>4}/{len(pages)} pages: {chunks} chunks")
    log(f"  {chunks} chunks queued for embedding in {time.monotonic() - started:.1f} s")
    return chunks


def ingest(conn: psycopg.Connection, page: ManualPage) -> int:
    with conn.transaction():
        (source_id,) = conn.execute(
            "select pgseek.ingest(%s, %s)", [page.text, Jsonb(page.metadata)]
        ).fetchone()
        (chunks,) = conn.execute(
            "select count(*) from pgseek.documents where source_id = %s", [source_id]
        ).fetchone()
    return chunks


@dataclass
class QueueStatus:
    embedded: int
    queued: int
    ready: int
    dead_letter: int


def queue_status(conn: psycopg.Connection) -> QueueStatus:
    row = conn.execute(
        "select embedded, queued, ready, dead_letter from pgseek.embedding_status"
    ).fetchone()
    return QueueStatus(*row)


def embed_queue(conn: psycopg.Connection) -> int:
    """Drains the embedding queue, alongside the pg_cron worker if it runs, printing
    progress; returns the documents embedded meanwhile (by either)."""
    status = queue_status(conn)
    if status.ready == 0:
        log(f"embeddings: {status.embedded} documents embedded, nothing to do")
        report_leftovers(status)
        return 0
    log(f"embeddings: {status.queued} documents queued (all-MiniLM-L6-v2, inside PostgreSQL)")
    started = last_line = last_progress = time.monotonic()
    first_embedded = progress_mark = status.embedded
    while status.ready > 0:
        (embedded_now,) = conn.execute(
            "select pgseek.process_embedding_queue(%s)", [EMBED_BATCH]
        ).fetchone()
        status = queue_status(conn)
        now = time.monotonic()
        if status.embedded != progress_mark:
            progress_mark, last_progress = status.embedded, now
        elif now - last_progress > STALL_SECONDS:
            sys.exit(f"demo: no progress for {STALL_SECONDS} s: see pgseek.embedding_status")
        if embedded_now == 0:
            time.sleep(1)  # the pg_cron worker holds the remaining entries
        if embedded_now or now - last_line >= 5 or status.ready == 0:
            last_line = now
            log(progress_line(status, status.embedded - first_embedded, now - started))
    report_leftovers(status)
    return status.embedded - first_embedded


def progress_line(status: QueueStatus, done: int, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    return (
        f"  {done:>6} embedded  {status.queued:>6} remaining  "
        f"{rate:6.1f} documents/s  {seconds:6.1f} s"
    )


def report_leftovers(status: QueueStatus) -> None:
    if status.queued:
        log(f"  {status.queued} entries wait for a retry: see pgseek.embedding_failures")
    if status.dead_letter:
        log(f"  {status.dead_letter} dead-lettered: select * from pgseek.embedding_failures")


def refresh_text_stats(conn: psycopg.Connection) -> None:
    started = time.monotonic()
    (result,) = conn.execute("select pgseek.refresh_text_stats()").fetchone()
    log(f"keyword statistics refreshed: {result} lexemes in {elapsed_ms(started):.0f} ms")


# --- searching -------------------------------------------------------------------------


@dataclass
class DemoSearch:
    query: str
    filter: dict[str, str] | None = None


DEMO_SEARCHES = (
    DemoSearch("how do I make a unique index without locking writes"),
    DemoSearch("vacuum bloat"),
    DemoSearch("window function running total"),
    DemoSearch("row level security policy"),
    DemoSearch("remove rows that reference a deleted row", filter={"chapter": "Data Definition"}),
)
SIMILAR_QUERY = "speed up searching documents for words"

HYBRID_SQL = """
select metadata->>'title', metadata->>'page', coalesce(snippet, content),
       score, vector_rank, text_rank, vector_similarity, text_score
from pgseek.hybrid_search(%(query)s, k => %(k)s, filter => %(filter)s, snippets => true)
"""
HYBRID_COLUMNS = (
    ("score", ".4f"),
    ("vector_rank", ""),
    ("text_rank", ""),
    ("vector_similarity", ".3f"),
    ("text_score", ".2f"),
)
SIMILAR_SQL = """
select metadata->>'title', metadata->>'page', content, rank, similarity, distance
from pgseek.search_similar(pgseek.embed(%(query)s), k => %(k)s)
"""
SIMILAR_COLUMNS = (("rank", ""), ("similarity", ".3f"), ("distance", ".3f"))


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def missing_search_functions(conn: psycopg.Connection) -> list[str]:
    names = ["pgseek.hybrid_search", "pgseek.search_similar", "pgseek.refresh_text_stats"]
    rows = conn.execute(
        "select name from unnest(%s::text[]) as name where to_regproc(name) is null", [names]
    ).fetchall()
    return [name for (name,) in rows]


def warm_up_model(conn: psycopg.Connection) -> None:
    """Loads the model in this backend, so that the first search time is a search's."""
    started = time.monotonic()
    conn.execute("select pgseek.compute_embeddings(array['warm up'])").fetchone()
    log(f"model ready in this connection in {elapsed_ms(started):.0f} ms")


def run_hybrid_search(conn: psycopg.Connection, search: DemoSearch, k: int = 5) -> None:
    params = {
        "query": search.query,
        "k": k,
        "filter": Jsonb(search.filter) if search.filter else None,
    }
    started = time.monotonic()
    rows = conn.execute(HYBRID_SQL, params).fetchall()
    ms = elapsed_ms(started)
    where = f", filter => '{json.dumps(search.filter)}'" if search.filter else ""
    print_results(f"hybrid_search('{search.query}'{where})", ms, HYBRID_COLUMNS, rows)


def run_similar_search(conn: psycopg.Connection, query: str, k: int = 5) -> None:
    started = time.monotonic()
    rows = conn.execute(SIMILAR_SQL, {"query": query, "k": k}).fetchall()
    ms = elapsed_ms(started)
    print_results(f"search_similar(embed('{query}'))", ms, SIMILAR_COLUMNS, rows)


# --- terminal output -------------------------------------------------------------------

COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if COLOR else ("", "", "")
SNIPPET_INDENT = 6


def formatted(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def terminal_width() -> int:
    return min(shutil.get_terminal_size((100, 24)).columns, 120)


def aligned(values: list[str], widths: list[int]) -> str:
    return "  ".join(value.rjust(width) for value, width in zip(values, widths, strict=True))


def print_results(
    heading: str, ms: float, columns: tuple[tuple[str, str], ...], rows: list[tuple]
) -> None:
    """The call and its time, then per result a line of numbers and the title, and a
    line with the page and the snippet. rows: (title, page, text, *numbers)."""
    names = [name for name, _ in columns]
    cells = [
        [formatted(value, spec) for value, (_, spec) in zip(row[3:], columns, strict=True)]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(names, *cells, strict=True)]
    log()
    log(f"{BOLD}{heading}{RESET}  {ms:.1f} ms")
    log(f"{DIM}{aligned(names, widths)}  title{RESET}")
    for numbers, (title, page, text, *_) in zip(cells, rows, strict=True):
        log(f"{aligned(numbers, widths)}  {BOLD}{title}{RESET}")
        room = terminal_width() - SNIPPET_INDENT - len(page) - 3
        log(f"{' ' * SNIPPET_INDENT}{DIM}{page} · {RESET}{one_line(text, room)}")
    if not rows:
        log("  (no results)")


def one_line(text: str, limit: int) -> str:
    """A snippet on one line, cut to limit characters; ts_headline's <b> marks become
    bold on a terminal and are dropped elsewhere."""
    plain = re.sub(r"\s+", " ", text or "").strip()
    visible = re.sub(r"</?b>", "", plain)
    if len(visible) > limit:
        plain = cut_marked(plain, limit - 1) + "…"
    return plain.replace("<b>", BOLD).replace("</b>", RESET)


def cut_marked(text: str, limit: int) -> str:
    """text cut after limit visible characters, <b> marks not counted, none left open."""
    parts = re.split(r"(</?b>)", text)
    kept, visible, open_mark = [], 0, False
    for part in parts:
        if part in ("<b>", "</b>"):
            kept.append(part)
            open_mark = part == "<b>"
            continue
        kept.append(part[: limit - visible])
        visible += len(kept[-1])
        if visible >= limit:
            break
    return "".join(kept).rstrip() + ("</b>" if open_mark else "")


def print_next_steps() -> None:
    source_filter = json.dumps({"source": SOURCE})
    log()
    log(f'{BOLD}Try it yourself:{RESET} make psql (or psql "$(make -s db-url)"), then')
    for line in (
        "select metadata->>'title' as title, score, snippet",
        "  from pgseek.hybrid_search('create a table partitioned by date', k => 5,",
        "                            snippets => true);",
        "select metadata->>'page' as page, similarity",
        "  from pgseek.search_similar(pgseek.embed('why is my query slow'), k => 5);",
        "select embedded, queued, docs_per_second from pgseek.embedding_status;",
    ):
        log(f"  {line}")
    log(f"The demo's pages are the sources with metadata {source_filter}; to remove them:")
    log(f"  delete from pgseek.sources where metadata @> '{source_filter}';")


# --- main ------------------------------------------------------------------------------


def connect(url: str) -> psycopg.Connection:
    # prepare_threshold=None: no server-side prepared statements (poolers, replanning).
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def chosen_pages() -> list[Path]:
    directory = manual_directory()
    if not directory.is_dir():
        sys.exit(
            f"demo: {directory} not found: run 'make install' (it installs postgresql-doc), "
            "or set DEMO_DOC_DIR to the manual's html directory"
        )
    selection = os.environ.get("DEMO_PAGES", "default")
    pages = select_pages(directory, page_patterns(selection))
    if not pages:
        sys.exit(f"demo: DEMO_PAGES={selection!r} matches no page in {directory}")
    return pages


def main() -> None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("demo: DATABASE_URL is not set (run it with 'make demo')")
    pages = chosen_pages()
    started = time.monotonic()
    with connect(url) as conn:
        missing = missing_search_functions(conn)
        if missing:
            sys.exit(f"demo: {', '.join(missing)} not installed here: run 'make migrate'")
        loaded = load_pages(conn, pages)
        if embed_queue(conn) or loaded:
            refresh_text_stats(conn)
        warm_up_model(conn)
        for search in DEMO_SEARCHES:
            run_hybrid_search(conn, search)
        run_similar_search(conn, SIMILAR_QUERY)
    print_next_steps()
    log(f"\ndemo finished in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
