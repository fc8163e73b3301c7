"""``distilbeam distil``: train a smaller, faster student on what a teacher wrote into a distilbeam output
folder (one classify column's full label distributions), and write a model directory ``distilbeam run``
loads as it is. The loop it closes: label a sample, ``distilbeam train`` a teacher, annotate the corpus
with ``distilbeam run``, distil a student, annotate with the student."""

from __future__ import annotations

import functools
import logging
import random
import tempfile
from pathlib import Path

from distilbeam.pipeline import train_config

log = logging.getLogger("distilbeam")


def distil(config_path: str, overrides: list[str]) -> int:
    """Config → teacher rows (texts and distributions) → student (every other layer of the teacher, or a
    checkpoint with a fresh head for the teacher's labels) → Trainer on the KL loss, documents held out to
    measure agreement → model directory with card, metrics and report."""
    import transformers

    from distilbeam.transforms.training import distil as kd
    from distilbeam.transforms.training import encode, finetune, save
    from distilbeam.transforms.training.card import summary_line

    cfg = train_config.load_distil(config_path, overrides)
    save.check_output(cfg.output.location)
    teacher_cfg, t = cfg.teacher, cfg.training
    rows = kd.read_teacher(teacher_cfg.output_location, teacher_cfg.task, teacher_cfg.text_field)
    teacher_uri = teacher_cfg.model or rows.model
    if not teacher_uri:
        raise train_config.ConfigError(
            "teacher.model: the output's summary names no model; give its directory"
        )
    teacher_base = finetune.fetch_base(teacher_cfg.model_ref(teacher_uri), "classify", key="teacher.model")
    if teacher_base.config.get("problem_type") == "multi_label_classification":
        raise train_config.ConfigError(
            f"teacher.task: {teacher_cfg.task} is multi-label; distil takes a softmax classifier"
        )
    transformers.set_seed(t.seed)
    if cfg.student.init == "every-other-layer":
        teacher, tokenizer = finetune.load_for_task(teacher_base, "classify", rows.labels, False, t.seed)
        if [teacher.config.id2label[i] for i in range(len(rows.labels))] != rows.labels:
            raise train_config.ConfigError(
                f"teacher.model: {teacher_uri}'s labels are not those of {teacher_cfg.task}"
            )
        student = kd.every_other_layer(teacher)
        base, origin = (
            teacher_base,
            f"every other layer of the teacher ({student.config.num_hidden_layers} kept)",
        )
    else:
        base = finetune.fetch_base(cfg.student.checkpoint_ref, "classify", key="student.init")
        student, tokenizer = finetune.load_for_task(base, "classify", rows.labels, False, t.seed)
        origin = f"checkpoint {cfg.student.init}"
    order = list(range(len(rows.texts)))
    random.Random(t.seed).shuffle(order)
    held = max(1, round(t.validation_fraction * len(order)))
    splits = [sorted(order[held:]), sorted(order[:held])]
    enc = tokenizer(rows.texts, truncation=True, max_length=t.max_length)
    encoded = [encode.Encoded(ids, p) for ids, p in zip(enc["input_ids"], rows.probs.tolist(), strict=True)]
    pad = tokenizer.pad_token_id or 0
    sets = []
    for indices, seed in zip(splits, (t.seed, None), strict=True):
        part = [encoded[i] for i in indices]
        batches = encode.token_batches([len(x.input_ids) for x in part], t.batch_tokens, seed)
        sets.append(encode.BatchDataset(part, batches, pad, ner=False))
    log.info(
        "distilling %s (%s) into a %d-layer student on %d documents, %d held out",
        teacher_cfg.output,
        teacher_cfg.task,
        student.config.num_hidden_layers,
        len(splits[0]),
        len(splits[1]),
    )
    trainer_class = functools.partial(
        kd.DistilTrainer, temperature=t.temperature, hard_label_weight=t.hard_label_weight
    )
    with tempfile.TemporaryDirectory(prefix="distilbeam-distil-") as work:
        args = finetune.trainer_arguments(t, Path(work), "agreement")
        trainer, history = finetune.fit(
            student, args, sets[0], sets[1], kd.agreement_metrics, t.early_stopping_patience, trainer_class
        )
        final = finetune.scores(trainer.evaluate())
    print(f"distilbeam: held-out documents: {summary_line(final, None)} with the teacher")
    if not trainer.is_world_process_zero():
        return 0
    from distilbeam.transforms.training.data import files_sha256

    facts = {
        "title": f"{Path(cfg.output.path.rstrip('/')).name}: student of {teacher_cfg.task}",
        "summary": f"Distilled with distilbeam distil from the {teacher_cfg.task} column of "
        f"{teacher_cfg.output}; {origin}.",
        "task": "classify",
        "task_name": teacher_cfg.task,
        "labels": rows.labels,
        "base": {"uri": base.uri, "weights_sha256": base.weights_sha256},
        "origin": {
            "teacher model": teacher_uri,
            "teacher weights SHA-256": teacher_base.weights_sha256,
            "teacher output": teacher_cfg.output,
            "student init": origin,
        },
        "data": {
            "train": {
                "examples": len(splits[0]),
                "files": files_sha256(rows.files),
            },
            "held out": {"examples": len(splits[1])},
        },
        "settings": train_config.plain(cfg),
        "final": final,
        "history": history,
    }
    with save.staging(cfg.output.location) as staged:
        save.write_model_dir(staged, trainer.model, tokenizer, facts)
        save.publish(staged, cfg.output.location)
    print(f"distilbeam: wrote {student.config.num_hidden_layers}-layer student to {cfg.output.path}")
    return 0
