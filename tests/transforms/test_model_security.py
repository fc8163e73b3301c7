"""Model directories are data, never code: weights load from safetensors unless a task allows pickle, code a
model directory ships is never imported, and files copied from a remote model directory land inside the
cache, whatever their names."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import fsspec
import pytest
import transformers

from distilbeam.transforms import SetupError, models
from tests.conftest import REPO
from tests.transforms.handlers import build_task


class _Payload:
    """Unpickling this writes the marker file: the proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def _task(model: Path, kind: str = "classify", **settings):
    return build_task(kind, model, **settings)


def _copy(models_dir: Path, tmp_path: Path, name: str = "classifier") -> Path:
    target = tmp_path / name
    shutil.copytree(models_dir / name, target)
    return target


def test_pickle_weights_are_refused_unless_allowed(models_dir, tmp_path):
    model = _copy(models_dir, tmp_path)
    marker = tmp_path / "MARKER"
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(
        SetupError, match=r"tasks.t.model: model .* has only pickle weights .* allow_pickle: true"
    ):
        _task(model)
    ref = models.ModelRef(str(model))
    with pytest.raises(SetupError, match="has only pickle weights"):  # the worker refuses too, on its own
        models.load_model(model, transformers.AutoModelForSequenceClassification, ref)
    assert not marker.exists()


def test_safetensors_are_loaded_and_a_pickle_beside_them_is_never_opened(models_dir, tmp_path):
    model = _copy(models_dir, tmp_path)
    marker = tmp_path / "MARKER"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    handler, _, identity = _task(model)
    loaded = handler.load_model()
    assert type(loaded.model).__name__ == "DistilBertForSequenceClassification"
    assert identity["weights_sha256"] == models.weights_sha256([model / "model.safetensors"])
    assert not marker.exists()


def _with_custom_code(model: Path, marker: Path, model_type: str) -> None:
    code = f"open({str(marker)!r}, 'a').write('imported\\n')\n"
    code += "from transformers import DistilBertConfig as EvilConfig\n"
    code += "from transformers import DistilBertForSequenceClassification as EvilModel\n"
    code += "from transformers import DistilBertTokenizerFast as EvilTokenizer\n"
    (model / "evil.py").write_text(code)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSequenceClassification": "evil.EvilModel",
        "AutoTokenizer": [None, "evil.EvilTokenizer"],
    }
    (model / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


def test_code_shipped_with_a_known_model_type_is_never_imported(models_dir, tmp_path):
    model = _copy(models_dir, tmp_path)
    marker = tmp_path / "MARKER"
    _with_custom_code(model, marker, "distilbert")
    handler, _, _ = _task(model)
    loaded = handler.load_model()
    assert type(loaded.model).__module__.startswith("transformers.models.distilbert")
    assert type(loaded.tokenizer).__module__.startswith("transformers.")
    assert not marker.exists()


def test_a_model_that_needs_its_own_code_is_refused_before_the_run(models_dir, tmp_path):
    model = _copy(models_dir, tmp_path)
    marker = tmp_path / "MARKER"
    _with_custom_code(model, marker, "evilbert")
    with pytest.raises(SetupError) as error:
        _task(model)
    assert str(error.value) == (
        f"tasks.t.model: model {model} has model_type 'evilbert', which transformers does not know and ships "
        "code of its own (auto_map); distilbeam never runs code from a model directory (no trust_remote_code)"
    )
    assert not marker.exists()


def test_every_from_pretrained_call_refuses_remote_code():
    """Each ``from_pretrained`` call in the package passes ``trust_remote_code=False``, and nothing turns
    remote code on anywhere."""
    calls = 0
    for path in [*REPO.glob("pipeline/*.py"), *REPO.glob("transforms/**/*.py")]:
        source = path.read_text()
        assert "trust_remote_code=True" not in source, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in (
                "from_pretrained",
                "pipeline",
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                flag = keywords.get("trust_remote_code")
                assert isinstance(flag, ast.Constant) and flag.value is False, f"{path}:{node.lineno}"
                calls += 1
    assert calls >= 3


@pytest.mark.parametrize(
    ("name", "fine"),
    [
        ("root/model/config.json", True),
        ("root/model/sub/dir/file.bin", True),
        ("root/model/../../escape.txt", False),
        ("root/model/sub/../../../escape.txt", False),
        ("root/model//etc/passwd", False),
        ("root/model/./x", False),
        ("root/other/config.json", False),
    ],
)
def test_cache_destinations_stay_inside_the_copy(tmp_path, name, fine):
    if fine:
        dest = models.cache_destination(tmp_path / "copy", "root/model", name, "s3://root/model")
        assert dest.resolve().is_relative_to((tmp_path / "copy").resolve())
    else:
        with pytest.raises(
            SetupError, match=r"model directory s3://root/model holds a file named .* outside it"
        ):
            models.cache_destination(tmp_path / "copy", "root/model", name, "s3://root/model")


def test_a_remote_model_with_a_dot_dot_file_name_cannot_write_outside_the_cache(models_dir, tmp_path):
    memory = fsspec.filesystem("memory")
    root = f"/hostile-{os.getpid()}"
    try:
        for file in (models_dir / "classifier").iterdir():
            memory.pipe(f"{root}/model/{file.name}", file.read_bytes())
        memory.pipe(f"{root}/model/../../escape.txt", b"written outside the cache")
        assert f"{root}/model/../../escape.txt" in memory.find(f"{root}/model")
        with pytest.raises(SetupError, match=r"holds a file named '.*/model/\.\./\.\./escape\.txt'"):
            models.local_dir(models.ModelRef(f"memory://{root}/model"))
        cache = models.cache_root()
        written = [p for p in cache.parent.rglob("escape.txt")] if cache.parent.exists() else []
        assert written == []
        assert not cache.exists() or not list((cache / "models").iterdir())  # no half-made copy left
    finally:
        memory.rm(root, recursive=True)
