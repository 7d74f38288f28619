import hashlib

from pgseek.textutil import content_hash


def test_content_hash_is_sha256_hex_of_utf8_text():
    text = "Grüße, 世界 🚀"
    assert content_hash(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_content_hash_of_known_value():
    assert content_hash("hello") == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )


def test_content_hash_changes_with_any_character():
    assert content_hash("hello world") != content_hash("hello world ")
    assert content_hash("") != content_hash(" ")
