"""Hostile configuration: each mistake ends ``distilbeam run`` before any pipeline starts, with exit status 2
and one line that names the key or path at fault and what to do."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from distilbeam.pipeline import cli, config
from distilbeam.transforms.tasks import TASK_KINDS

KINDS = ", ".join(TASK_KINDS)  # classify, ner, qa, embed


def error_line(capsys, main) -> str:
    """Runs ``main``, which must fail with a config error; returns the error line without its prefix."""
    code = main()
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("distilbeam: error: "), err
    return line.removeprefix("distilbeam: error: ")


@pytest.fixture
def setup(tmp_path, models_dir, capsys):
    """A valid config (input, one classify task, fresh output) and a function that runs ``distilbeam run``
    on it with changes, expecting a config error: it returns the error line."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"text": "hello"}\n')
    base = {
        "input": {"paths": [str(inputs / "*.jsonl")]},
        "tasks": {"s": {"kind": "classify", "model": str(models_dir / "classifier")}},
        "output": {"path": str(tmp_path / "out")},
    }

    def error(changes: dict | None = None, *args: str, raw: str | None = None) -> str:
        cfg = json.loads(json.dumps(base))
        for dotted, value in (changes or {}).items():
            *parents, last = dotted.split(".")
            node = cfg
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        path = tmp_path / "config.yaml"
        path.write_text(raw if raw is not None else yaml.safe_dump(cfg))
        return error_line(capsys, lambda: cli.main(["run", "--config", str(path), *args]))

    error.tmp_path = tmp_path
    error.models = models_dir
    error.capsys = capsys
    return error


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs": {}},
            "inputs: unknown key (expected one of: input, tasks, output, batching, runtime, beam)",
        ),
        (
            {"input.pathz": ["x"]},
            "input.pathz: unknown key (expected one of: paths, format, id_field, text_field,",
        ),
        (
            {"tasks.s.aggregaton": "simple"},
            "tasks.s.aggregaton: unknown key (expected one of: model, revision,",
        ),
        (
            {"batching.max_token": 5},
            "batching.max_token: unknown key (expected one of: max_tokens, sort_window)",
        ),
    ],
)
def test_unknown_keys_are_refused_with_their_path(setup, changes, message):
    assert setup(changes).startswith(message)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input.max_chars": "big"}, "input.max_chars: expected an integer, got 'big'"),
        ({"input.max_chars": 1.5}, "input.max_chars: expected an integer, got 1.5"),
        ({"batching.max_tokens": True}, "batching.max_tokens: expected an integer or auto, got True"),
        ({"output.keep_text": "yes"}, "output.keep_text: expected true or false, got 'yes'"),
        ({"input.paths": 5}, "input.paths: expected a list, got int"),
        ({"input.paths": []}, "input.paths: at least one path or glob is needed"),
        ({"input.format": "csv"}, "input.format: expected one of text, jsonl, parquet, got 'csv'"),
        ({"tasks": ["s"]}, "tasks: expected a mapping of task name to settings, got list"),
        ({"tasks": {}}, "tasks: at least one task is needed"),
        ({"tasks.s.kind": "summarize"}, f"tasks.s.kind: expected one of {KINDS}, got 'summarize'"),
        ({"batching": 3}, "batching: expected a mapping, got int"),
        ({"input.storage_options": "key=secret"}, "input.storage_options: expected a mapping, got str"),
        ({"output.path": ""}, "output.path: expected a non-empty string, got ''"),
        ({"runtime.device": "tpu"}, "runtime.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ],
)
def test_wrong_types_are_refused_with_their_path(setup, changes, message):
    assert setup(changes).startswith(message)


def test_a_value_of_the_wrong_type_in_storage_options_is_not_echoed(setup):
    assert "secret" not in setup({"input.storage_options": "key=secret"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batching.max_tokens": 0}, "batching.max_tokens: must be a positive integer, got 0"),
        ({"batching.max_tokens": -8192}, "batching.max_tokens: must be a positive integer, got -8192"),
        ({"batching.sort_window": 0}, "batching.sort_window: must be a positive integer, got 0"),
        ({"input.max_chars": -1}, "input.max_chars: must be a positive integer, got -1"),
        ({"runtime.torch_threads": 0}, "runtime.torch_threads: must be a positive integer or null"),
        ({"tasks.s.max_length": 0}, "tasks.s.max_length: must be a positive integer or null, got 0"),
        ({"tasks.s.max_length": -5}, "tasks.s.max_length: must be a positive integer or null, got -5"),
        (
            {"tasks.s.max_length": 2},
            "tasks.s.max_length: 2 tokens leave no room for text beside the model's 2",
        ),
    ],
)
def test_zero_and_negative_budgets_are_refused(setup, changes, message):
    assert setup(changes).startswith(message)


def test_ner_stride_must_fit_the_window(setup):
    ner = {"kind": "ner", "model": str(setup.models / "ner"), "max_length": 16}
    assert setup({"tasks.s": {**ner, "stride": -1}}) == (
        "tasks.s.stride: -1 must be at least 0 and below the window's 14 tokens"
    )
    assert setup({"tasks.s": {**ner, "stride": 14}}) == (
        "tasks.s.stride: 14 must be at least 0 and below the window's 14 tokens"
    )


def test_a_model_path_that_is_not_a_model_is_refused(setup):
    tmp = setup.tmp_path
    (tmp / "empty-dir").mkdir()
    (tmp / "a-file").write_text("not a model")
    (tmp / "bad-json").mkdir()
    (tmp / "bad-json" / "config.json").write_text("{not json")
    (tmp / "list-json").mkdir()
    (tmp / "list-json" / "config.json").write_text("[]")
    no_weights = tmp / "no-weights"
    shutil.copytree(setup.models / "classifier", no_weights)
    (no_weights / "model.safetensors").unlink()
    model = "tasks.s.model"
    cases = {
        str(tmp / "nowhere"): f"{model}: model directory {tmp / 'nowhere'} does not exist",
        str(
            tmp / "a-file"
        ): f"{model}: model {tmp / 'a-file'} is a file; name the directory holding config.json",
        str(
            tmp / "empty-dir"
        ): f"{model}: model {tmp / 'empty-dir'} has no config.json: is it a transformers",
        str(tmp / "bad-json"): f"{model}: model {tmp / 'bad-json'}: config.json is not valid JSON",
        str(tmp / "list-json"): f"{model}: model {tmp / 'list-json'}: config.json holds no JSON object",
        str(no_weights): f"{model}: model {no_weights} has no weights (expected model.safetensors)",
        str(
            setup.models / "ner"
        ): f"{model}: model {setup.models / 'ner'} is not a *ForSequenceClassification",
        str(setup.models / "tokenizer"): f"{model}: model {setup.models / 'tokenizer'} has no config.json",
    }
    for path, message in cases.items():
        assert setup({"tasks.s.model": path}).startswith(message), path


@pytest.mark.parametrize(
    ("pattern", "output"),
    [
        ("data/**", "data/out"),
        ("data/**/*.parquet", "data/out"),
        ("data/*/*.parquet", "data/out"),
        ("data/*.parquet", "data"),
        ("data/*.json", "data"),
        ("data/out/_errors/*", "data/out"),
        ("./data/../data/out/*", "data/out/"),
        ("s3://bucket/corpus/**", "s3://bucket/corpus/annotated"),
    ],
)
def test_an_output_path_inside_an_input_glob_is_refused(setup, monkeypatch, pattern, output):
    monkeypatch.chdir(setup.tmp_path)
    message = setup({"input.paths": [pattern], "output.path": output})
    assert message == (
        f"output.path: {output} is inside input.paths {pattern!r}: a later run would read this run's outputs "
        "as input; write the output where no input glob reaches"
    )


@pytest.mark.parametrize(
    ("pattern", "output"),
    [
        ("data/*.jsonl", "data/out"),
        ("data/*", "data/out"),  # one level: the output's files sit a level deeper
        ("data/**/*.jsonl", "data/out"),
        ("s3://bucket/corpus/**", "gs://bucket/corpus/annotated"),
        ("data/in/*.parquet", "data"),
    ],
)
def test_an_output_path_no_input_glob_reaches_is_accepted(tmp_path, monkeypatch, pattern, output):
    monkeypatch.chdir(tmp_path)
    config.check_output_outside_inputs((pattern,), output)


def test_an_existing_output_is_not_replaced_without_force(setup):
    out = setup.tmp_path / "out"
    out.mkdir()
    (out / "_SUMMARY.json").write_text("{}")
    assert setup() == (
        f"output.path: {out} is not empty; choose another path, or pass --force to replace the distilbeam "
        "outputs in it"
    )
    assert (out / "_SUMMARY.json").read_text() == "{}"
    shutil.rmtree(out)
    out.write_text("a file")
    assert setup() == f"output.path: {out} exists and is not a directory"


def test_command_line_and_file_mistakes_are_config_errors(setup):
    assert setup(None, "--set", "input.max_chars") == "--set 'input.max_chars': expected dotted.key=value"
    assert setup(None, "--set", "input.storage_options.key:hunter2") == (
        "--set 'input.storage_options...': expected dotted.key=value"
    )
    assert setup(None, "--set", "input.paths.x=1") == "--set input.paths.x: input.paths is not a mapping"
    assert setup(None, raw="input: [unclosed") == (
        f"config file {setup.tmp_path / 'config.yaml'} is not valid YAML: expected ',' or ']', but got "
        "'<stream end>' at line 1, column 17"
    )
    assert setup(None, "--set", "input.max_chars=[1") == (
        "--set input.max_chars: value is not valid YAML: expected ',' or ']', but got '<stream end>' "
        "at line 1, column 3"
    )
    assert setup(None, raw="- a list").endswith("must hold a mapping at the top level")
    missing = setup.tmp_path / "missing.yaml"
    assert error_line(setup.capsys, lambda: cli.main(["run", "--config", str(missing)])) == (
        f"config file {missing} does not exist"
    )


def test_the_config_hash_ignores_storage_options(setup):
    """Credentials live in storage_options: rotating them changes no output, and no hash records them."""
    cfg = {
        "input": {"paths": ["x"], "storage_options": {"key": "a"}},
        "tasks": {"s": {"kind": "classify", "model": "m"}},
        "output": {"path": "o"},
    }
    rotated = json.loads(json.dumps(cfg))
    rotated["input"]["storage_options"]["key"] = "b"
    assert config.from_dict(cfg).sha256() == config.from_dict(rotated).sha256()
    changed = json.loads(json.dumps(cfg))
    changed["input"]["max_chars"] = 10
    assert config.from_dict(cfg).sha256() != config.from_dict(changed).sha256()


def test_the_cli_exits_2_as_a_user_sees_it(tmp_path):
    from tests.conftest import run_cli

    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "c.yaml"
    path.write_text(
        yaml.safe_dump({"input": {"paths": ["nothing-*.jsonl"]}, "tasks": {}, "output": {"path": "o"}})
    )
    result = run_cli("run", "--config", str(path), cwd=tmp_path / "run")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "distilbeam: error: tasks: at least one task is needed, e.g. sentiment: "
        "{kind: classify, model: ...}\n"
    )
    assert os.listdir(tmp_path / "run") == ["c.yaml"]  # nothing written
