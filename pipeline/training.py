"""``distilbeam train``: fine-tune an encoder checkpoint for ``classify`` (single- or multi-label, single
texts or pairs) or ``ner`` on labelled files, and write a model directory that ``tasks.<name>.model`` in a
``distilbeam run`` config loads as it is. Everything that can be checked before training (the config, the
output directory, the base model, every record and the label set) is checked first, so a mistake ends the
command in seconds with exit status 2 and a line naming the key, file or record."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from distilbeam.pipeline import train_config

log = logging.getLogger("distilbeam")


def train(config_path: str, overrides: list[str]) -> int:
    """Config → checks → encoded batches → ``Trainer`` (best epoch kept) → final evaluation and the TF-IDF
    baseline on the same validation split → model directory with card, metrics and report."""
    from distilbeam.transforms.training import data, encode, finetune, metrics, save
    from distilbeam.transforms.training.card import summary_line

    cfg = train_config.load_train(config_path, overrides)
    save.check_output(cfg.output.location)
    base = finetune.fetch_base(cfg.base_model_ref, cfg.task)
    examples = read_splits(cfg)
    train_set, validation = examples["train"], examples["validation"]
    multi_label = cfg.task == "classify" and check_label_shape(train_set + validation)
    labels = data.label_set(train_set, validation, cfg.data.labels)
    data.check_split(train_set, validation, labels)
    outputs = encode.bio_labels(labels) if cfg.task == "ner" else labels
    t = cfg.training
    model, tokenizer = finetune.load_for_task(base, cfg.task, outputs, multi_label, t.seed)
    if cfg.task == "ner":
        encoded = [encode.encode_ner(s, tokenizer, outputs, t.max_length) for s in (train_set, validation)]
    else:
        encoded = [
            encode.encode_classify(s, tokenizer, labels, multi_label, t.max_length)
            for s in (train_set, validation)
        ]
    pad = tokenizer.pad_token_id or 0
    sets = [
        encode.BatchDataset(
            e,
            encode.token_batches([len(x.input_ids) for x in e], t.batch_tokens, seed),
            pad,
            cfg.task == "ner",
        )
        for e, seed in zip(encoded, (t.seed, None), strict=True)
    ]
    metric = "f1" if cfg.task == "ner" else "macro_f1"
    log.info(
        "training %s on %d examples (%d batches), validating on %d; labels: %s",
        cfg.base_model,
        len(train_set),
        len(sets[0]),
        len(validation),
        ", ".join(labels),
    )
    with tempfile.TemporaryDirectory(prefix="distilbeam-train-") as work:
        args = finetune.trainer_arguments(t, Path(work), metric)
        compute = metrics.metric_function(cfg.task, multi_label, outputs)
        trainer, history = finetune.fit(model, args, sets[0], sets[1], compute, t.early_stopping_patience)
        final = finetune.scores(trainer.evaluate())
    baseline = (
        metrics.baseline(train_set, validation, labels, multi_label) if cfg.task == "classify" else None
    )
    print(f"distilbeam: validation: {summary_line(final, baseline)}")
    if not trainer.is_world_process_zero():
        return 0
    facts = {
        "title": f"{Path(cfg.output.path.rstrip('/')).name}: {cfg.task} fine-tuned from {cfg.base_model}",
        "summary": f"Fine-tuned with distilbeam train ({'multi-label ' if multi_label else ''}{cfg.task}"
        f"{', sentence pairs' if cfg.data.text_pair_field else ''}).",
        "task": cfg.task,
        "task_name": "labels" if cfg.task == "classify" else "entities",
        "labels": list(labels),
        "base": {"uri": base.uri, "weights_sha256": base.weights_sha256, "revision": cfg.revision},
        "data": {
            split: {"examples": len(examples[split]), "files": examples[f"{split}_hashes"]}
            for split in ("train", "validation")
        },
        "settings": train_config.plain(cfg),
        "final": final,
        "baseline": baseline,
        "history": history,
    }
    with save.staging(cfg.output.location) as staged:
        save.write_model_dir(staged, trainer.model, tokenizer, facts)
        save.publish(staged, cfg.output.location)
    print(f"distilbeam: wrote {cfg.task} model ({len(outputs)} labels) to {cfg.output.path}")
    return 0


def read_splits(cfg: Any) -> dict[str, Any]:
    """Train and validation examples (validation held out of train when no files are named for it), and the
    SHA-256 of the files each came from."""
    from distilbeam.transforms.training import data

    d = cfg.data
    fields = data.Fields(d.text_field, d.label_field, d.text_pair_field)
    train, files = data.read_examples([d.location(p) for p in d.train], fields, cfg.task, "data.train")
    hashes = data.files_sha256(files)
    if d.validation:
        globs = [d.location(p) for p in d.validation]
        validation, vfiles = data.read_examples(globs, fields, cfg.task, "data.validation")
        vhashes = data.files_sha256(vfiles)
    else:
        train, validation = data.hold_out(train, d.validation_fraction, cfg.training.seed)
        vhashes = {
            "held out of train": f"{d.validation_fraction:g} of its examples, seed {cfg.training.seed}"
        }
    return {"train": train, "validation": validation, "train_hashes": hashes, "validation_hashes": vhashes}


def check_label_shape(examples: list[Any]) -> bool:
    """Whether the labels are lists (multi-label); every record must agree with the first."""
    from distilbeam.transforms.training.data import DataError

    multi = isinstance(examples[0].label, tuple)
    for e in examples:
        if isinstance(e.label, tuple) != multi:
            shape = "a list of labels (multi-label)" if multi else "one label"
            raise DataError(f"{e.where}: the label must be {shape}, as in {examples[0].where}")
    return multi


def add_arguments(parser: Any) -> None:
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def main(args: Any) -> int:
    """``distilbeam train`` or ``distilbeam distil``, from parsed command-line arguments."""
    if args.command == "distil":
        from distilbeam.pipeline.distil import distil

        return distil(args.config, args.set)
    return train(args.config, args.set)
