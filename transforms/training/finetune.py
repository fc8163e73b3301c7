"""Fine-tuning with ``transformers.Trainer`` (on ``accelerate``): the base checkpoint loaded by the same rules
as ``distilbeam run``'s models (Hub id, local or object-store directory, safetensors unless allowed) with a
fresh task head, trained on batches of about ``batch_tokens`` padded tokens, evaluated every epoch, the best
epoch kept (early stopping), on the GPU in bf16/fp16 where there is one and in fp32 on the CPU otherwise.
Under ``accelerate launch`` or ``torchrun`` the Trainer spreads the batches over every process."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import ProgressCallback

from distilbeam.transforms import SetupError, models
from distilbeam.transforms.training.encode import first

log = logging.getLogger(__name__)

AUTO_CLASSES = {"classify": "AutoModelForSequenceClassification", "ner": "AutoModelForTokenClassification"}
HEAD_NAMES = {"classify": "sequence-classification", "ner": "token-classification"}


@dataclasses.dataclass
class Base:
    """A base checkpoint on local disk: where it is, its config.json and the SHA-256 of its weights."""

    uri: str
    path: Path
    config: dict[str, Any]
    weights_sha256: str
    ref: models.ModelRef


def fetch_base(ref: models.ModelRef, task: str, key: str = "base_model") -> Base:
    """The checkpoint's directory, checked: a transformers model with safetensors weights (or pickle where
    allowed), a fast tokenizer, and an architecture that can take the task's head."""
    from transformers.models.auto import modeling_auto

    try:
        path = models.local_dir(ref)
    except SetupError as exc:
        raise SetupError(f"{key}: {exc}") from None
    except Exception as exc:  # the Hub unreachable, or no such repository
        raise SetupError(f"{key}: cannot fetch {ref.uri}: {type(exc).__name__}: {exc}") from None
    config = models.read_config(path, ref.uri)
    mapping = {
        "classify": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        "ner": modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    }[task]
    if config["model_type"] not in mapping:
        raise SetupError(
            f"{key}: {ref.uri} is a {config['model_type']} model, which cannot take a {HEAD_NAMES[task]} "
            f"head for task {task}; start from an encoder such as DistilBERT, BERT or MiniLM"
        )
    weights = models.weights_sha256(models.weight_files(path, ref))
    return Base(ref.uri, path, config, weights, ref)


def load_for_task(
    base: Base, task: str, labels: Sequence[str], multi_label: bool, seed: int
) -> tuple[Any, Any]:
    """The model with a head of ``len(labels)`` outputs, initialised from ``seed`` (a checkpoint's own head is
    replaced when its size differs), and its tokenizer."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    tokenizer = models.load_tokenizer(base.path)
    hf_logging.disable_progress_bar()  # loading and saving weights: the training bar is the one that counts
    transformers.set_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialized": the head, as intended
    try:
        model = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(
            str(base.path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type="multi_label_classification" if multi_label else "single_label_classification",
            ignore_mismatched_sizes=True,
            use_safetensors=not base.ref.allow_pickle or None,
            trust_remote_code=False,
            dtype=torch.float32,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def trainer_arguments(training: Any, work_dir: Path, metric: str, epochs: int | None = None) -> Any:
    """TrainingArguments from a ``training:`` section: one dataset item (a whole batch) per device step."""
    import torch
    from transformers import TrainingArguments

    cuda = training.device != "cpu" and torch.cuda.is_available()
    if training.device == "cuda" and not cuda:
        raise SetupError("training.device: cuda was asked for, but torch sees no GPU")
    precision = training.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision != "fp32" and not cuda:
        raise SetupError(f"training.precision: {precision} needs a GPU; use fp32 or auto on a CPU")
    stopping = training.early_stopping_patience is not None
    return TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        num_train_epochs=epochs or training.epochs,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_ratio,  # below 1: a share of all steps
        lr_scheduler_type="linear",
        seed=training.seed,
        data_seed=training.seed,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="epoch" if stopping else "no",
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=stopping,
        metric_for_best_model=metric,
        greater_is_better=True,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        report_to="none",
        optim="adamw_torch",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def fit(
    model: Any,
    args: Any,
    train_set: Any,
    eval_set: Any,
    compute_metrics: Callable[[Any], dict[str, float]],
    patience: int | None,
    trainer_class: Any = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Trains and evaluates every epoch; returns the trainer (its model the best epoch's when early stopping
    is on) and the per-epoch history: train loss, validation loss and the task's scores."""
    from transformers import EarlyStoppingCallback, Trainer

    callbacks = []
    if patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = (trainer_class or Trainer)(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=first,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(EpochProgress())
    trainer.train()
    return trainer, epoch_history(trainer.state.log_history)


def scores(logs: Mapping[str, Any]) -> dict[str, float]:
    """A Trainer log's validation scores: its eval_* numbers unprefixed, timings and epoch left out."""
    return {
        key.removeprefix("eval_"): float(value)
        for key, value in logs.items()
        if key.startswith("eval_")
        and isinstance(value, int | float)
        and not key.endswith(("_runtime", "_per_second"))
        and key != "eval_epoch"
    }


def epoch_history(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The Trainer's log, one row per epoch: train_loss, then eval_* keys without their prefix."""
    rows: dict[float, dict[str, float]] = {}
    for entry in log_history:
        epoch = round(float(entry.get("epoch", 0)), 4)
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            row["train_loss"] = float(entry["loss"])
        row.update(scores(entry))
    return [r for _, r in sorted(rows.items()) if len(r) > 1 and "loss" in r]


class EpochProgress(ProgressCallback):
    """The Trainer's progress bar, with each epoch's validation metrics written above it as one JSON line
    instead of its raw log dictionaries, and no bar of its own for each evaluation."""

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        pass

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        kept = {k: round(v, 6) for k, v in scores(logs).items()}
        if kept:
            self.training_bar.write(json.dumps({"epoch": round(state.epoch or 0, 4), **kept}))
