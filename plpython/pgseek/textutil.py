"""Small text helpers shared by the SQL functions and the queue worker."""

import hashlib


def content_hash(text: str) -> str:
    """Return the sha256 hex digest of ``text`` encoded as UTF-8.

    Hash exactly the text that gets embedded, so unchanged text is not embedded
    again. Equal to ``encode(sha256(convert_to(text, 'UTF8')), 'hex')`` in SQL.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
