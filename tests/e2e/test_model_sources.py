"""Models that must not run end the command before the pipeline starts, with exit status 2 and one line that
names the task, the model and what to do: pickle weights without ``allow_pickle``, and a model whose head
does not fit its task (here read from the S3 server)."""

from __future__ import annotations

from tests.conftest import run_cli, write_jsonl
from tests.transforms.test_models import pickle_only


def config(shards: str, output: str, **task) -> dict:
    return {
        "input": {"paths": [shards]},
        "tasks": {"sentiment": {"kind": "classify", **task}},
        "output": {"path": output},
        "beam": {"runner": "DirectRunner"},
    }


def test_pickle_only_model_fails_fast_without_allow_pickle(models_dir, write_config, tmp_path):
    model = pickle_only(models_dir, tmp_path / "old-checkpoint")
    shards = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "a good film"}])
    result = run_cli(
        "run", "--config", str(write_config(config(str(shards), str(tmp_path / "out"), model=str(model))))
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"distilbeam: error: tasks.sentiment.model: model {model} has only pickle weights "
        "(pytorch_model.bin), which can run code when loaded; convert it to safetensors, or set "
        "allow_pickle: true on the task if you trust it"
    )
    assert not list((tmp_path / "out").glob("*")), "nothing is written when the model is refused"


def test_model_with_the_wrong_head_fails_naming_it(s3_store, models_dir, write_config, tmp_path):
    bucket = s3_store.new_bucket("models")
    s3_store.put_tree(models_dir / "ner", f"{bucket}/ner")
    url = s3_store.url(bucket, "ner")
    shards = write_jsonl(tmp_path / "docs.jsonl", [{"id": "1", "text": "a good film"}])
    result = run_cli(
        "run", "--config", str(write_config(config(str(shards), str(tmp_path / "out"), model=url)))
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (  # after an INFO line on copying the model
        f"distilbeam: error: tasks.sentiment.model: model {url} is not a *ForSequenceClassification model "
        "(architectures: DistilBertForTokenClassification); task kind classify needs one"
    )
