"""Examples to model inputs: token ids with their targets (a class id, a multi-hot row, or a BIO tag id per
token, checked against entity spans that must start and end on token boundaries), then cut into batches
by a token budget, so that a step holds about ``batch_tokens`` padded tokens whatever the lengths."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from distilbeam.transforms.training.data import DataError, Example

IGNORE = -100  # the target of tokens no loss is taken on: special tokens and padding


@dataclasses.dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    target: Any  # int, list[float] (multi-hot, or a teacher's distribution), or list[int] per token
    token_type_ids: list[int] | None = None


def bio_labels(entity_types: Sequence[str]) -> list[str]:
    """The token labels of a ner model: O, then B-/I- for each entity type."""
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in ("B", "I")]


def encode_classify(
    examples: Sequence[Example], tokenizer: Any, labels: Sequence[str], multi_label: bool, max_length: int
) -> list[Encoded]:
    """Token ids (pairs as [CLS] a [SEP] b [SEP], the second text truncated first) and class targets."""
    index = {label: i for i, label in enumerate(labels)}
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if examples and examples[0].pair is not None else None
    truncation = "only_second" if pairs else True
    enc = tokenizer(texts, pairs, truncation=truncation, max_length=max_length)
    types = enc.get("token_type_ids")
    out = []
    for i, e in enumerate(examples):
        if multi_label:
            target: Any = [0.0] * len(labels)
            for label in e.labels():
                target[index[label]] = 1.0
        else:
            target = index[e.label]
        out.append(Encoded(enc["input_ids"][i], target, types[i] if pairs and types else None))
    return out


def encode_ner(
    examples: Sequence[Example], tokenizer: Any, tags: Sequence[str], max_length: int
) -> list[Encoded]:
    """Token ids and a tag id per token: B-<type> on an entity's first token, I-<type> on the rest, O
    elsewhere, IGNORE on special tokens. A span whose edges fall inside a token fails naming its record."""
    index = {tag: i for i, tag in enumerate(tags)}
    enc = tokenizer(
        [e.text for e in examples], truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    full = tokenizer([e.text for e in examples], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for i, e in enumerate(examples):
        starts = {s for s, t in full["offset_mapping"][i] if t > s}
        ends = {t for s, t in full["offset_mapping"][i] if t > s}
        for span in e.label:
            if span.start not in starts or span.end not in ends:
                raise DataError(
                    f"{e.where}: span [{span.start}, {span.end}) {span.label} "
                    f"{e.text[span.start : span.end]!r} does not start and end on token boundaries; "
                    "fix its offsets (or the text around it)"
                )
        sequence = enc.sequence_ids(i)
        target = []
        for k, (s, t) in enumerate(enc["offset_mapping"][i]):
            if sequence[k] is None or t <= s:
                target.append(IGNORE)
                continue
            tag = "O"
            for span in e.label:
                if span.start <= s < span.end:
                    tag = f"{'B' if s == span.start else 'I'}-{span.label}"
                    break
            target.append(index[tag])
        out.append(Encoded(enc["input_ids"][i], target))
    return out


def token_batches(lengths: Sequence[int], batch_tokens: int, seed: int | None) -> list[list[int]]:
    """Indices cut into batches of at most ``batch_tokens`` padded tokens (rows x longest row). Examples are
    shuffled by ``seed`` (None keeps their order), then sorted by length within windows of a few hundred,
    so that a batch pads little but its contents still vary with the seed."""
    order = list(range(len(lengths)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    window = 512
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = (
            sorted(order[w : w + window], key=lambda i: lengths[i])
            if seed is not None
            else order[w : w + window]
        )
        batch: list[int] = []
        longest = 0
        for i in chunk:
            if batch and max(longest, lengths[i]) * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, lengths[i])
        if batch:
            batches.append(batch)
    return batches


def collate(items: Sequence[Encoded], pad_id: int, ner: bool) -> dict[str, Any]:
    """One padded batch of tensors: input_ids, attention_mask, token_type_ids (pairs), labels."""
    import torch

    width = max(len(x.input_ids) for x in items)
    ids = [x.input_ids + [pad_id] * (width - len(x.input_ids)) for x in items]
    mask = [[1] * len(x.input_ids) + [0] * (width - len(x.input_ids)) for x in items]
    batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if items[0].token_type_ids is not None:
        batch["token_type_ids"] = torch.tensor(
            [x.token_type_ids + [0] * (width - len(x.token_type_ids)) for x in items]
        )
    if ner:
        batch["labels"] = torch.tensor([x.target + [IGNORE] * (width - len(x.target)) for x in items])
    elif isinstance(items[0].target, list):
        batch["labels"] = torch.tensor([x.target for x in items], dtype=torch.float32)
    else:
        batch["labels"] = torch.tensor([x.target for x in items])
    return batch


class BatchDataset:
    """A torch map-style dataset whose items are whole padded batches: the Trainer draws one item per step
    (per device), shuffling batches, not examples, with its seed."""

    def __init__(self, encoded: Sequence[Encoded], batches: Sequence[Sequence[int]], pad_id: int, ner: bool):
        self.batches = [collate([encoded[i] for i in b], pad_id, ner) for b in batches]
        self.order = [list(b) for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.batches[i]


def first(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The Trainer's collator over a BatchDataset: each item already is a batch."""
    return items[0]
