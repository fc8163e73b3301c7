"""Where models come from and how they are loaded: a Hugging Face Hub id, a local directory, or a directory
in an object store copied once into a local cache. Weights load from safetensors unless the config allows
pickle for a trusted model; remote code is never run."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from distilbeam.transforms import SetupError, storage

log = logging.getLogger(__name__)

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    # A Hub id, a local directory, or the fsspec URL of a directory with its store's options (kept out of
    # reprs: they may hold credentials); a string is taken as a place reached without options.
    location: storage.Location
    revision: str | None = None
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.location, storage.Location):
            object.__setattr__(self, "location", storage.Location(self.location))

    @property
    def uri(self) -> str:
        return self.location.url

    @property
    def is_remote(self) -> bool:
        return "://" in self.uri and not self.uri.startswith("file://")

    @property
    def is_local(self) -> bool:
        path = self.uri.removeprefix("file://")
        return self.uri.startswith(("file://", "/", "./", "../", "~")) or os.path.exists(path)


def cache_root() -> Path:
    return Path(os.environ.get("DISTILBEAM_CACHE", Path.home() / ".cache" / "distilbeam"))


def local_dir(ref: ModelRef) -> Path:
    """A local directory holding the model's files, fetching and caching it when it lives elsewhere."""
    if ref.is_remote:
        return _cached_copy(ref.location)
    if ref.is_local:
        path = Path(ref.uri.removeprefix("file://")).expanduser()
        if path.exists() and not path.is_dir():
            raise SetupError(f"model {ref.uri} is a file; name the directory holding config.json and weights")
        if not path.is_dir():
            raise SetupError(f"model directory {ref.uri} does not exist")
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    if ref.allow_pickle:
        patterns.append("*.bin")
    return Path(snapshot_download(ref.uri, revision=ref.revision, allow_patterns=patterns))


def worker_dir(ref: ModelRef) -> Path:
    """``local_dir`` on a worker, where a local directory the launcher checked may not exist."""
    try:
        return local_dir(ref)
    except SetupError as exc:
        if not ref.is_local:
            raise
        raise SetupError(
            f"{exc} on worker {socket.gethostname()}: a model given as a local directory is loaded from that "
            "same path by every worker; on a cluster, put the model in gs:// or s3://, or bake it into the "
            "worker image at that path"
        ) from None


def _cached_copy(source: storage.Location) -> Path:
    """Copies a remote model directory into the cache under a key of its URL and its files' identities
    (size and etag/generation/checksum), so a changed model is fetched anew and an unchanged one reused by
    later bundles, tasks and runs on the same machine.

    The copy lands in a temporary directory, each file's size is checked against the listing, and the
    directory is renamed into place only when complete: a half-copied model is never used, whether the
    copy failed or its process was killed. Processes on one machine take a lock on the cache, so one copies
    while the others wait and then reuse its copy."""
    uri = source.url
    try:
        fs, root = source.filesystem()
        listing = storage.retrying("list model directory", uri, lambda: fs.find(root, detail=True))
    except storage.StorageError as exc:
        raise SetupError(str(exc)) from exc
    if not listing:
        raise SetupError(f"model directory {uri} is empty or does not exist")
    target = cache_root() / "models" / cache_key(uri, listing)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        if target.is_dir():  # copied by another process while this one waited
            return target
        _remove_stale_copies(target)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            for path, info in sorted(listing.items()):
                dest = cache_destination(tmp, root, path, uri)
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = fs.unstrip_protocol(path)
                storage.retrying("copy model file", source, lambda p=path, d=dest: fs.get_file(p, str(d)))
                if info.get("size") is not None and dest.stat().st_size != info["size"]:
                    raise SetupError(
                        f"model file {source}: copied {dest.stat().st_size} bytes, expected {info['size']}"
                    )
            try:
                tmp.rename(target)
            except OSError:  # a process on another machine sharing this cache finished first
                if not target.is_dir():
                    raise
        except storage.StorageError as exc:
            raise SetupError(str(exc)) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("copied model %s to %s", uri, target)
    return target


def cache_key(uri: str, listing: Mapping[str, Mapping[str, Any]]) -> str:
    """The cache directory name of a remote model: its URL and, per file, path, size and version tag."""
    identity = hashlib.sha256(uri.encode())
    for path, info in sorted(listing.items()):
        size, tag = storage.file_identity(info)
        identity.update(f"{path}\0{size}\0{tag}\n".encode())
    return identity.hexdigest()[:32]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Holds an exclusive lock on the cache directory itself (no lock file to leave behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_copies(target: Path) -> None:
    """Partial copies left by killed processes (the lock is held, so none is in progress)."""
    for partial in target.parent.glob(f".{target.name}.*.partial"):
        shutil.rmtree(partial, ignore_errors=True)


def cache_destination(tmp: Path, root: str, path: str, uri: str) -> Path:
    """Where a listed file of a remote model directory lands in the cache copy: below it, always. An object
    name with ``..`` or an absolute part would otherwise write outside the cache."""
    rel = path[len(root.rstrip("/")) + 1 :]
    parts = rel.split("/")
    if not path.startswith(root.rstrip("/") + "/") or any(p in ("", ".", "..") for p in parts):
        raise SetupError(f"model directory {uri} holds a file named {path!r}, which would land outside it")
    return tmp.joinpath(*parts)


def read_config(path: Path, uri: str) -> dict[str, Any]:
    """config.json of a model directory; a model that needs code of its own is refused (never run)."""
    config = path / "config.json"
    if not config.is_file():
        raise SetupError(f"model {uri} has no config.json: is it a transformers model directory?")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SetupError(f"model {uri}: config.json is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SetupError(f"model {uri}: config.json holds no JSON object")
    from transformers import CONFIG_MAPPING

    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        custom = " and ships code of its own (auto_map)" if "auto_map" in data else ""
        raise SetupError(
            f"model {uri} has model_type {model_type!r}, which transformers does not know{custom}; "
            "distilbeam never runs code from a model directory (no trust_remote_code)"
        )
    return data


def weight_files(path: Path, ref: ModelRef) -> list[Path]:
    """The files holding the weights, refusing pickle unless the config allows it."""
    for names in (SAFE_WEIGHTS, PICKLE_WEIGHTS):
        found = [path / n for n in names if (path / n).is_file()]
        if found and names is PICKLE_WEIGHTS and not ref.allow_pickle:
            raise SetupError(
                f"model {ref.uri} has only pickle weights (pytorch_model.bin), which can run code when "
                "loaded; convert it to safetensors, or set allow_pickle: true on the task if you trust it"
            )
        if found:
            index = [f for f in found if f.name.endswith(".index.json")]
            if index:
                shards = json.loads(index[0].read_text())["weight_map"].values()
                return sorted({path / s for s in shards})
            return found
    raise SetupError(f"model {ref.uri} has no weights (expected model.safetensors)")


def weights_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if not tokenizer.is_fast:
        raise SetupError(f"model at {path} has no fast tokenizer (tokenizer.json); offsets need one")
    return tokenizer


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single sequence ([CLS] / [SEP])."""
    inner = tokenizer.encode("a", add_special_tokens=False)
    framed = tokenizer.encode("a", add_special_tokens=True)
    for i in range(len(framed) - len(inner) + 1):
        if framed[i : i + len(inner)] == inner:
            return framed[:i], framed[i + len(inner) :]
    raise SetupError(f"cannot tell the special tokens of {type(tokenizer).__name__}")


def tokenizer_identity(tokenizer: Any) -> str:
    """Two tasks whose tokenizers have the same identity share one tokenization."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def load_model(path: Path, auto_class: Any, ref: ModelRef, dtype: Any = None) -> Any:
    """The model in ``dtype`` (float32 unless given), whatever dtype its checkpoint was saved in:
    transformers 5 would otherwise keep the checkpoint's own, so that a model saved in fp16 would run in fp16
    whatever ``runtime.precision`` asks (see ``TaskHandler.load_model`` for the dtype each precision uses)."""
    import torch
    from transformers.utils import logging as hf_logging

    weight_files(path, ref)  # refuses pickle before transformers gets a chance to unpickle anything
    hf_logging.disable_progress_bar()
    return auto_class.from_pretrained(
        str(path),
        use_safetensors=not ref.allow_pickle or None,
        trust_remote_code=False,
        dtype=dtype or torch.float32,
    ).eval()
