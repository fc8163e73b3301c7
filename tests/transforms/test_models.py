"""Model sources: a directory in S3 or GCS is copied once into the local cache, atomically, keyed by its URL
and content; weights are safetensors unless pickle is allowed; a model that does not fit its task is refused
before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distilbeam.transforms import SetupError, models, storage
from distilbeam.transforms.storage import Location
from tests.transforms.handlers import build_task


def remote_model(store, models_dir: Path, name: str = "classifier") -> tuple[str, str]:
    bucket = store.new_bucket("models")
    store.put_tree(models_dir / name, f"{bucket}/{name}")
    return bucket, store.url(bucket, name)


def cached_dirs() -> list[str]:
    root = models.cache_root() / "models"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def downloads(log: list[tuple[str, str]], model: Path) -> list[str]:
    """Requests that fetched a model file's content (listings and metadata lookups aside)."""
    names = tuple(f"/{p.name}" for p in model.iterdir())
    return [path for method, path in log if method == "GET" and path.endswith(names)]


def test_copied_once_then_reused(store, fault_proxy, models_dir, monkeypatch):
    fault_proxy.rate = 0.0  # a plain relay here, to count requests
    bucket, _ = remote_model(store, models_dir)
    ref = models.ModelRef(
        Location(fault_proxy.store.url(bucket, "classifier"), {"skip_instance_cache": True})
    )
    monkeypatch.setenv(*fault_proxy.store.endpoint_variable)

    first = models.local_dir(ref)
    assert len(downloads(fault_proxy.log, models_dir / "classifier")) == len(list(first.iterdir()))
    for file in (models_dir / "classifier").iterdir():
        assert (first / file.name).read_bytes() == file.read_bytes()
    assert first.parent == models.cache_root() / "models"

    fault_proxy.log.clear()
    assert models.local_dir(ref) == first
    assert (
        downloads(fault_proxy.log, models_dir / "classifier") == []
    )  # only the listing that tells whether the model changed
    assert cached_dirs() == [first.name]


def test_a_changed_model_is_fetched_anew(store, models_dir):
    bucket, url = remote_model(store, models_dir)
    first = models.local_dir(models.ModelRef(url))
    config = json.loads((models_dir / "classifier" / "config.json").read_text())
    config["id2label"] = {"0": "BAD", "1": "GOOD"}
    store.put(f"{bucket}/classifier/config.json", json.dumps(config).encode())
    store.fs().invalidate_cache()
    second = models.local_dir(models.ModelRef(url))
    assert second != first
    assert json.loads((second / "config.json").read_text())["id2label"] == {"0": "BAD", "1": "GOOD"}
    assert json.loads((first / "config.json").read_text())["id2label"] != {"0": "BAD", "1": "GOOD"}


def test_an_interrupted_copy_is_never_used(store, models_dir, monkeypatch):
    _, url = remote_model(store, models_dir)
    real_retrying = storage.retrying
    copied = []

    def copy_then_die(action, uri, operation, **kwargs):
        if action == "copy model file":
            if len(copied) == 2:
                raise KeyboardInterrupt  # the worker is stopped mid-copy
            copied.append(uri)
        return real_retrying(action, uri, operation, **kwargs)

    monkeypatch.setattr(storage, "retrying", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        models.local_dir(models.ModelRef(url))
    assert len(copied) == 2
    assert cached_dirs() == []  # neither a half-copied model nor its temporary directory

    # A process killed outright leaves its partial copy behind; it is never taken for the model.
    monkeypatch.setattr(storage, "retrying", real_retrying)
    fs, root = Location(url).filesystem()
    listing = fs.find(root, detail=True)
    partial = models.cache_root() / "models" / f".{models.cache_key(url, listing)}.0123abcd.partial"
    partial.mkdir(parents=True)
    (partial / "config.json").write_bytes((models_dir / "classifier" / "config.json").read_bytes())
    path = models.local_dir(models.ModelRef(url))
    assert sorted(p.name for p in path.iterdir()) == sorted(
        p.name for p in (models_dir / "classifier").iterdir()
    )
    assert models.weights_sha256([path / "model.safetensors"]) == models.weights_sha256(
        [models_dir / "classifier" / "model.safetensors"]
    )
    assert not partial.exists()


@pytest.mark.slow  # real S3 and GCS emulators behind a fault proxy
def test_missing_and_denied_model_directories_are_named(store, fault_proxy, models_dir, monkeypatch):
    missing = store.url(store.new_bucket("empty"), "nothing-here")
    bucket, _ = remote_model(store, models_dir)
    monkeypatch.setenv(*fault_proxy.store.endpoint_variable)
    options = {"skip_instance_cache": True}
    with pytest.raises(SetupError, match=f"model directory {missing} is empty or does not exist"):
        models.local_dir(models.ModelRef(Location(missing, options)))
    fault_proxy.deny.add(bucket)
    denied = fault_proxy.store.url(bucket, "classifier")
    with pytest.raises(SetupError, match=f"cannot list model directory {denied}: access denied"):
        models.local_dir(models.ModelRef(Location(denied, options)))


def pickle_only(models_dir: Path, target: Path) -> Path:
    """The classifier as an old checkpoint: its weights in pytorch_model.bin (pickle), no safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(models_dir / "classifier", target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    return target


def task(model: str, kind: str = "classify", **settings):
    return build_task(kind, model, **settings)


def test_pickle_weights_load_only_when_allowed(models_dir, tmp_path):
    model = pickle_only(models_dir, tmp_path / "old-checkpoint")
    with pytest.raises(SetupError, match=r"tasks\.t\.model: model .*old-checkpoint has only pickle weights"):
        task(str(model))
    handler, _, identity = task(str(model), allow_pickle=True)
    safe_handler, _, _ = task(str(models_dir / "classifier"))
    assert identity["weights_sha256"] == models.weights_sha256([model / "pytorch_model.bin"])
    loaded, safe = handler.load_model(), safe_handler.load_model()
    for (name, value), (_, expected) in zip(
        loaded.model.state_dict().items(), safe.model.state_dict().items(), strict=True
    ):
        assert value.equal(expected), name


def test_a_model_that_does_not_fit_its_task_is_refused_by_name(models_dir, tmp_path):
    with pytest.raises(
        SetupError, match=r"tasks\.t\.model: model .*/ner is not a \*ForSequenceClassification"
    ):
        task(str(models_dir / "ner"))
    with pytest.raises(SetupError, match=r"model .*/classifier is not a \*ForTokenClassification"):
        task(str(models_dir / "classifier"), kind="ner")
    unlabelled = shutil.copytree(models_dir / "classifier", tmp_path / "unlabelled")
    config = json.loads((unlabelled / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (unlabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(SetupError, match=r"model .*/unlabelled has no id2label"):
        task(str(unlabelled))


def test_a_model_ref_carries_its_source_as_one_location():
    options = {"key": "secret"}
    ref = models.ModelRef(Location("s3://bucket/model", options), "main")
    assert ref.uri == "s3://bucket/model" and ref.location.options == options and ref.is_remote
    assert "secret" not in repr(ref)
    assert models.ModelRef("distilbert-base-uncased").location == Location("distilbert-base-uncased")
