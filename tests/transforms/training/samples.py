"""Made-up labelled records for training tests: sentiment sentences whose label follows from one word, topics
for multi-label, sentence pairs, and entity spans over the tiny tokenizer's vocabulary."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.conftest import write_jsonl

POSITIVE = ("good", "great", "excellent", "lovely")
NEGATIVE = ("bad", "terrible", "awful", "poor")
FILLER = "the movie was really quite a film about the city and its river".split()  # noqa: SIM905
PEOPLE = ("alice", "bob", "carol", "grace")
PLACES = ("paris", "london", "berlin", "tokyo")


def sentiment(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = [*rng.sample(FILLER, 5), rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        records.append({"id": str(i), "text": " ".join(words), "label": label})
    return records


def topics(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Multi-label: 'people' when a name occurs, 'places' when a city does (either, both or neither)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words, labels = rng.sample(FILLER, 4), []
        if i % 4 in (1, 3):
            words.append(rng.choice(PEOPLE))
            labels.append("people")
        if i % 4 in (2, 3):
            words.append(rng.choice(PLACES))
            labels.append("places")
        rng.shuffle(words)
        records.append({"text": " ".join(words), "label": labels})
    return records


def pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Whether the second sentence repeats the first's sentiment word's polarity."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        same = i % 2 == 0
        first = rng.choice(POSITIVE + NEGATIVE)
        pool = POSITIVE if (first in POSITIVE) == same else NEGATIVE
        records.append(
            {
                "premise": f"the film was {first}",
                "hypothesis": f"a {rng.choice(pool)} movie",
                "label": "same" if same else "different",
            }
        )
    return records


def entities(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Sentences naming a person and a place, with their character spans (PER, LOC)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        head = " ".join(rng.sample(FILLER, 2))
        text = f"{head} {person} visited {place} on monday"
        p = text.index(person)
        c = text.index(place, p + len(person))
        spans = [
            {"start": p, "end": p + len(person), "label": "PER"},
            {"start": c, "end": c + len(place), "label": "LOC"},
        ]
        records.append({"text": text, "label": spans})
    return records


def train_config(base: Path, train: Path, out: Path, task: str = "classify", **extra: Any) -> dict[str, Any]:
    """A small, fast training config: one epoch of steps of 256 tokens at most."""
    data = {"train": [str(train)], "validation_fraction": 0.25, **extra.pop("data", {})}
    training = {"epochs": 1, "batch_tokens": 256, "max_length": 32, "learning_rate": 1e-3}
    training.update(extra.pop("training", {}))
    return {
        "base_model": str(base),
        "task": task,
        "data": data,
        "training": training,
        "output": {"path": str(out)},
    }


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    return write_jsonl(path, records)
