"""The config model: YAML loading, dotted ``--set`` overrides, and every mistake reported with the full path
of the key at fault, before anything else happens."""

from __future__ import annotations

import re

import pytest
import yaml

from distilbeam.pipeline import config
from distilbeam.pipeline.config import ConfigError, from_dict, load
from distilbeam.transforms import SetupError
from distilbeam.transforms.tasks import classify, ner
from tests.conftest import REPO


def minimal(**extra) -> dict:
    cfg = {
        "input": {"paths": ["shards/*.jsonl"]},
        "tasks": {"sentiment": {"kind": "classify", "model": "models/classifier"}},
        "output": {"path": "out/run1"},
    }
    cfg.update(extra)
    return cfg


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    return str(info.value)


# -- loading -------------------------------------------------------------------------------------------------


def test_minimal_config_takes_documented_defaults():
    cfg = from_dict(minimal())
    assert cfg.input.paths == ("shards/*.jsonl",)
    assert cfg.input.format is None
    assert cfg.input.id_field == "id"
    assert cfg.input.text_field == "text"
    assert cfg.batching.max_tokens == "auto"
    assert cfg.runtime.device == "auto"
    assert cfg.runtime.precision == "auto"
    assert cfg.output.compression == "zstd"
    assert cfg.output.keep_text is False
    assert cfg.beam == {}
    (task,) = cfg.tasks.values()
    assert isinstance(task, classify.Settings)
    assert task.model == "models/classifier"


def test_documented_config_reference_loads_as_written():
    """docs/configuration.md's config block is the reference users copy: every key in it must be real."""
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## The config file", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    cfg = from_dict(yaml.safe_load(block))
    assert set(cfg.tasks) == {"sentiment", "entities", "answers", "vectors"}
    assert isinstance(cfg.tasks["entities"], ner.Settings)
    assert cfg.tasks["entities"].aggregation == "simple"
    assert cfg.input.format == "jsonl"
    assert cfg.beam == {"runner": "DirectRunner"}


@pytest.mark.parametrize("name", ["offline-demo.yaml", "quickstart.yaml"])
def test_shipped_configs_load(name):
    cfg = load(REPO / "configs" / name)
    assert {t.kind for t in cfg.tasks.values()} == {"classify", "ner"}


def test_load_reads_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "input: {paths: [a.txt, 'b/*.jsonl.gz'], format: text, id_field: null}\n"
        "tasks:\n"
        "  entities: {kind: ner, model: m, aggregation: max, stride: null}\n"
        "batching: {max_tokens: 512, sort_window: 10}\n"
        "runtime: {device: 'cuda:1', precision: fp16, torch_threads: 3}\n"
        "output: {path: 's3://bucket/out', compression: none, keep_text: true}\n"
        "beam: {runner: DirectRunner, direct_num_workers: 2}\n",
        encoding="utf-8",
    )
    cfg = load(path)
    assert cfg.input.paths == ("a.txt", "b/*.jsonl.gz")
    assert cfg.input.id_field is None
    assert cfg.tasks["entities"].aggregation == "max"
    assert cfg.tasks["entities"].stride is None
    assert (cfg.batching.max_tokens, cfg.batching.sort_window) == (512, 10)
    assert (cfg.runtime.device, cfg.runtime.precision, cfg.runtime.torch_threads) == ("cuda:1", "fp16", 3)
    assert (cfg.output.path, cfg.output.compression, cfg.output.keep_text) == (
        "s3://bucket/out",
        "none",
        True,
    )
    assert cfg.beam == {"runner": "DirectRunner", "direct_num_workers": 2}


def test_config_is_frozen():
    cfg = from_dict(minimal())
    with pytest.raises(AttributeError):
        cfg.output.path = "elsewhere"  # type: ignore[misc]


# -- --set overrides -----------------------------------------------------------------------------------------


def test_overrides_parse_values_as_yaml(write_config):
    path = write_config(minimal())
    cfg = load(
        path,
        [
            'input.paths=["a/*.jsonl", "b/*.txt.gz"]',
            "batching.max_tokens=1024",
            "input.id_field=null",
            "output.keep_text=true",
            "output.path=gs://bucket/run 2",
            "tasks.sentiment.long_text=truncate",
            "tasks.sentiment.max_length=128",
            "beam.direct_num_workers=2",
        ],
    )
    assert cfg.input.paths == ("a/*.jsonl", "b/*.txt.gz")
    assert cfg.batching.max_tokens == 1024
    assert cfg.input.id_field is None
    assert cfg.output.keep_text is True
    assert cfg.output.path == "gs://bucket/run 2"
    assert cfg.tasks["sentiment"].long_text == "truncate"
    assert cfg.tasks["sentiment"].max_length == 128
    assert cfg.beam == {"direct_num_workers": 2}


def test_override_can_add_a_task(write_config):
    cfg = load(write_config(minimal()), ["tasks.people.kind=ner", "tasks.people.model=models/ner"])
    assert list(cfg.tasks) == ["sentiment", "people"]
    assert isinstance(cfg.tasks["people"], ner.Settings)


def test_override_value_that_is_not_yaml_is_a_string(write_config):
    """A glob such as ``*.jsonl`` is not valid YAML (an alias): it is taken as the plain string it is."""
    cfg = load(write_config(minimal()), ["input.paths=*.jsonl"])
    assert cfg.input.paths == ("*.jsonl",)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("output.path", "--set 'output.path': expected dotted.key=value"),
        ("=3", "--set '=3': expected dotted.key=value"),
        ("input.paths.first=a", "--set input.paths.first: input.paths is not a mapping"),
        ("input.paths=[a, b", "--set input.paths: value is not valid YAML"),
        ("batching.max_tokens=lots", "batching.max_tokens: expected an integer or auto, got 'lots'"),
        ("output.compresion=zstd", "output.compresion: unknown key"),
    ],
)
def test_bad_override_names_the_key(write_config, override, expected):
    with pytest.raises(ConfigError) as info:
        load(write_config(minimal()), [override])
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


# -- mistakes, each named by its full key path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (minimal(inputs={}), "inputs"),
        (minimal(input={"paths": ["a"], "pathz": ["b"]}), "input.pathz"),
        (minimal(batching={"max_token": 10}), "batching.max_token"),
        (minimal(output={"path": "o", "keep-text": True}), "output.keep-text"),
        (minimal(runtime={"gpu": True}), "runtime.gpu"),
        (
            minimal(tasks={"sentiment": {"kind": "classify", "model": "m", "aggregation": "simple"}}),
            "tasks.sentiment.aggregation",
        ),
        (
            minimal(tasks={"people": {"kind": "ner", "model": "m", "long_text": "truncate"}}),
            "tasks.people.long_text",
        ),
    ],
)
def test_unknown_key_names_its_full_path(data, path):
    message = error_of(data)
    assert message.startswith(f"{path}: unknown key (expected one of: ")


def test_unknown_keys_of_mixed_types_are_reported_not_crashed_on():
    message = error_of({**minimal(), 1: "one", "extra": "two"})
    assert message.startswith("1: unknown key")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (minimal(input={"paths": 5}), "input.paths: expected a list, got int"),
        (minimal(input={"paths": ["a", 3]}), "input.paths[1]: expected a non-empty string, got 3"),
        (
            minimal(input={"paths": ["a"], "format": "csv"}),
            "input.format: expected one of text, jsonl, parquet",
        ),
        (minimal(input={"paths": ["a"], "id_field": ""}), "input.id_field: expected a non-empty string"),
        (minimal(input={"paths": ["a"], "max_chars": 0}), "input.max_chars: must be a positive integer"),
        (
            minimal(input={"paths": ["a"], "storage_options": "anon"}),
            "input.storage_options: expected a mapping",
        ),
        (
            minimal(batching={"max_tokens": "8k"}),
            "batching.max_tokens: expected an integer or auto, got '8k'",
        ),
        (
            minimal(batching={"max_tokens": 512.5}),
            "batching.max_tokens: expected an integer or auto, got 512.5",
        ),
        (
            minimal(batching={"max_tokens": True}),
            "batching.max_tokens: expected an integer or auto, got True",
        ),
        (minimal(batching={"max_tokens": 0}), "batching.max_tokens: must be a positive integer"),
        (minimal(batching={"sort_window": -1}), "batching.sort_window: must be a positive integer"),
        (minimal(runtime={"device": "tpu"}), "runtime.device: expected auto, cpu, cuda or cuda:N"),
        (minimal(runtime={"precision": "fp8"}), "runtime.precision: expected one of auto, fp32, fp16, bf16"),
        (minimal(runtime={"torch_threads": 0}), "runtime.torch_threads: must be a positive integer or null"),
        (minimal(output={"path": "o", "keep_text": "yes"}), "output.keep_text: expected true or false"),
        (minimal(output={"path": "o", "compression": "rar"}), "output.compression: expected one of zstd"),
        (minimal(output={"path": 7}), "output.path: expected a non-empty string, got 7"),
        (minimal(output=["o"]), "output: expected a mapping, got list"),
        (minimal(tasks=["sentiment"]), "tasks: expected a mapping of task name to settings, got list"),
        (minimal(tasks={}), "tasks: at least one task is needed"),
        (minimal(tasks={"sentiment": "classify"}), "tasks.sentiment: expected a mapping with kind and model"),
        (
            minimal(tasks={"my-task": {"kind": "ner", "model": "m"}}),
            "tasks.my-task: task names become column",
        ),
        (
            minimal(tasks={"s": {"kind": "classify", "model": "m", "long_text": "split"}}),
            "tasks.s.long_text: expected one of truncate, chunk-mean, chunk-max, got 'split'",
        ),
        (
            minimal(tasks={"e": {"kind": "ner", "model": "m", "aggregation": "mean"}}),
            "tasks.e.aggregation: expected one of none, simple, first, average, max, got 'mean'",
        ),
        (
            minimal(tasks={"e": {"kind": "ner", "model": "m", "allow_pickle": "no"}}),
            "tasks.e.allow_pickle: expected true or false",
        ),
        (
            minimal(tasks={"e": {"kind": "ner", "model": "m", "stride": "64"}}),
            "tasks.e.stride: expected an integer",
        ),
    ],
)
def test_wrong_value_names_its_full_path(data, expected):
    message = error_of(data)
    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tasks": minimal()["tasks"], "output": {"path": "o"}}, "input: required key is missing"),
        (minimal(input={"format": "text"}), "input.paths: required key is missing"),
        (minimal(input={"paths": []}), "input.paths: at least one path or glob is needed"),
        ({"input": {"paths": ["a"]}, "output": {"path": "o"}}, "tasks: required key is missing"),
        (minimal(output={"compression": "zstd"}), "output.path: required key is missing"),
        ({"input": {"paths": ["a"]}, "tasks": minimal()["tasks"]}, "output: required key is missing"),
        (minimal(tasks={"s": {"kind": "classify"}}), "tasks.s.model: required key is missing"),
    ],
)
def test_missing_required_key_is_named(data, expected):
    assert error_of(data).startswith(expected)


@pytest.mark.parametrize("kind", ["summarize", None, ["ner"], {"name": "ner"}, 3])
def test_unknown_task_kind_lists_the_known_ones(kind):
    settings = {"model": "m"} if kind is None else {"kind": kind, "model": "m"}
    message = error_of(minimal(tasks={"t": settings}))
    assert message.startswith(f"tasks.t.kind: expected one of classify, ner, qa, embed, got {kind!r}")


def test_config_errors_are_setup_errors():
    """The command line turns every SetupError into one line and exit status 2."""
    assert issubclass(ConfigError, SetupError)


# -- the file itself -----------------------------------------------------------------------------------------


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml does not exist"):
        load(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported_on_one_line_with_its_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("input:\n  paths: [a, b\noutput: {path: o}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"config file {path} is not valid YAML: ")
    assert message.endswith(" at line 3, column 7")
    assert "\n" not in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load(path)


def test_empty_file_reports_the_first_missing_key(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^input: required key is missing"):
        load(path)


# -- identity ------------------------------------------------------------------------------------------------


def test_config_hash_follows_what_shapes_the_rows_only():
    base = from_dict(minimal())
    assert base.sha256() == from_dict(minimal()).sha256()
    elsewhere = from_dict(minimal(output={"path": "gs://b/other"}, beam={"runner": "DataflowRunner"}))
    assert elsewhere.sha256() == base.sha256()
    for changed in (
        minimal(output={"path": "out/run1", "keep_text": True}),
        minimal(tasks={"sentiment": {"kind": "classify", "model": "models/other"}}),
        minimal(
            tasks={"sentiment": {"kind": "classify", "model": "models/classifier", "long_text": "truncate"}}
        ),
        minimal(input={"paths": ["shards/*.jsonl"], "text_field": "body"}),
    ):
        assert from_dict(changed).sha256() != base.sha256()


def test_to_dict_round_trips():
    cfg = from_dict(minimal(tasks={"e": {"kind": "ner", "model": "m", "stride": 16}}))
    plain = cfg.to_dict()
    assert plain["tasks"]["e"]["kind"] == "ner"
    assert from_dict(plain) == cfg
    assert config.from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg


# -- sentence pairs ------------------------------------------------------------------------------------------


def pairs(**input_keys) -> dict:
    return minimal(input={"paths": ["shards/*.jsonl"], "text_pair_field": "hypothesis", **input_keys})


def test_text_pair_field_is_read_for_classify_tasks():
    cfg = from_dict(pairs())
    assert cfg.input.text_pair_field == "hypothesis"
    assert from_dict(minimal()).input.text_pair_field is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            pairs(format="text"),
            "input.text_pair_field: text shards hold one text per line; pairs are read from",
        ),
        (
            pairs(text_field="hypothesis"),
            "input.text_pair_field: must name another field than input.text_field",
        ),
        (pairs(long_documents="split"), "input.text_pair_field: a sentence pair is annotated whole"),
        (
            {**pairs(), "tasks": {"entities": {"kind": "ner", "model": "m"}}},
            "input.text_pair_field: sentence pairs are read by classify tasks only; tasks.entities is",
        ),
        (
            {
                **pairs(),
                "tasks": {"s": {"kind": "classify", "model": "m"}, "v": {"kind": "embed", "model": "m"}},
            },
            "input.text_pair_field: sentence pairs are read by classify tasks only; tasks.v is kind embed",
        ),
        (
            {**pairs(), "tasks": {"a": {"kind": "qa", "model": "m", "questions": ["Who?"]}}},
            "tasks.a is kind qa",
        ),
        (
            {**pairs(), "tasks": {"nli": {"kind": "classify", "model": "m", "long_text": "chunk-max"}}},
            "tasks.nli.long_text: chunk-max does not apply to sentence pairs (input.text_pair_field)",
        ),
    ],
)
def test_pair_settings_that_cannot_work_are_named(data, expected):
    assert expected in error_of(data)


@pytest.mark.parametrize("long_text", ["truncate", "chunk-mean"])
def test_pairs_leave_long_text_truncate_or_the_default_unused(long_text):
    task = {"kind": "classify", "model": "m", "long_text": long_text}
    assert from_dict({**pairs(), "tasks": {"nli": task}}).tasks["nli"].long_text == long_text


def test_configs_without_pairs_keep_their_hashes_and_a_pair_field_changes_them():
    """The hashes of a config that does not name a pair field are those it had before the key existed."""
    from distilbeam.pipeline.plan import annotation_sha256

    data = minimal(input={"paths": ["s/*.jsonl"]}, tasks={"s": {"kind": "classify", "model": "m"}})
    data["output"] = {"path": "o", "keep_text": True}
    single = from_dict(data)
    assert "text_pair_field" not in single.to_dict()["input"]
    assert single.sha256() == "ac4ce878a90db3679a27e1e4a531aa87ab2ffb062b69b20c09ead283df717d4d"
    identity = {"s": {"x": 1}}
    assert annotation_sha256(single, identity) == (
        "88df363b08e9be09b2413cd5c32502a025ddb5240c7783fd8c6c5c07a88000d3"
    )
    paired = from_dict({**data, "input": {**data["input"], "text_pair_field": "hypothesis"}})
    assert paired.sha256() != single.sha256()
    assert annotation_sha256(paired, identity) != annotation_sha256(single, identity)
    assert from_dict(paired.to_dict()) == paired
