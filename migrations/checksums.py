"""Checksums that guard released migrations against silent edits.

A revision's checksum covers its .py module and its .upgrade.sql/.downgrade.sql files.
Two guards use it: `frozen.txt` (the manifest of released revisions, checked by the test
suite and by `scripts/migrate.py freeze --check`) and pgseek_meta.migration_checksums
(what each database applied, checked by env.py before every run).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent
VERSIONS = MIGRATIONS / "versions"
REPEATABLE = MIGRATIONS.parent / "sql"
FROZEN = MIGRATIONS / "frozen.txt"


def file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def revision_files(module: Path) -> list[Path]:
    """The files that make up one revision: its module and its SQL files."""
    sql = [module.with_suffix(f".{d}.sql") for d in ("upgrade", "downgrade")]
    return [module] + [p for p in sql if p.exists()]


def revision_checksum(module: Path) -> str:
    digest = hashlib.sha256()
    for path in revision_files(module):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def revision_modules() -> list[Path]:
    return sorted(p for p in VERSIONS.glob("*.py") if not p.name.startswith("_"))


def repeatable_files() -> list[Path]:
    """The repeatable object files, in the order they are applied."""
    return sorted(REPEATABLE.glob("*.sql"))


def read_frozen() -> dict[str, str]:
    """frozen.txt as {module file name: checksum}."""
    if not FROZEN.exists():
        return {}
    entries = {}
    for line in FROZEN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            checksum, name = line.split()
            entries[name] = checksum
    return entries


def frozen_mismatches() -> list[str]:
    """Released revisions whose files no longer match frozen.txt (or are missing)."""
    problems = []
    modules = {p.name: p for p in revision_modules()}
    for name, checksum in read_frozen().items():
        if name not in modules:
            problems.append(f"{name}: released but missing from migrations/versions")
        elif revision_checksum(modules[name]) != checksum:
            problems.append(f"{name}: edited after release (checksum differs from frozen.txt)")
    return problems


def freeze() -> list[str]:
    """Add every revision not yet in frozen.txt; returns the names added."""
    frozen = read_frozen()
    added = [p.name for p in revision_modules() if p.name not in frozen]
    for module in revision_modules():
        frozen.setdefault(module.name, revision_checksum(module))
    header = (
        "# Released migrations: sha256 of each revision's .py + .upgrade.sql + .downgrade.sql.\n"
        "# Append-only. Written by `make migrations-freeze`; checked by the test suite.\n"
    )
    FROZEN.write_text(header + "".join(f"{c}  {n}\n" for n, c in sorted(frozen.items())))
    return added
