"""ner post-processing runs over a whole batch at once (every token of every window in one array) and gives
what ``transformers``' token-classification pipeline gives window by window. The reference here is that
pipeline's algorithm token by token, as this project ran it before; the two are compared on random logits,
label sets, word splits, documents and windows, with every aggregation strategy."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilbeam.transforms.batching import Tokenized, windows
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime, ner
from distilbeam.transforms.tasks.base import Loaded

STRATEGIES = ("none", "simple", "first", "average", "max")
LABEL_SETS = [
    ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
    ("O", "B-ENT", "I-ENT", "MISC"),  # a plain label beside B-/I- ones
    ("PER", "O", "LOC", "MISC"),  # no B-/I- at all, and "O" not first
    ("B-X", "I-X", "X-Y", "B-O", "O"),  # "X-Y": its own type, named "Y"; "B-O": named "O" once grouped
    ("MISC",),  # one label: every token is an entity
]
WORDS = ["paris", "the", "a", "hotel", "alice", "un", "x", ".", "-", "cafe"]
PIECES = ["##s", "##ing", "##aff", "##able", "##e", "##x"]
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *PIECES]
# What an unknown token may cover: longer or shorter than "[UNK]", across a combining mark.
UNKNOWN_TEXTS = ["👍", "東京", "e\u0301", "👩🏽‍💻", "ABCDEFG"]
PREFIX, SUFFIX = [2], [3]


class Tokenizer:
    """What post-processing reads of a fast tokenizer: WordPiece's "##" marker, or none (a byte-level BPE
    tokenizer's case), its token strings and its unknown token. Counts the id-to-string look-ups."""

    def __init__(self, word_aware: bool):
        self._tokenizer = SimpleNamespace(
            model=SimpleNamespace(continuing_subword_prefix="##" if word_aware else None)
        )
        self.unk_token_id = VOCABULARY.index("[UNK]")
        self.lookups = 0

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(VOCABULARY)}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        self.lookups += 1
        return [VOCABULARY[i] for i in ids]


def document(rng: random.Random, n_tokens: int, index: int) -> Tokenized:
    """A document of ``n_tokens`` tokens with their offsets: words after a space, a dash, a newline or
    nothing; "##" pieces glued to the token before; some words longer than their token (an accent as a
    combining mark), unknown tokens of any length."""
    text = rng.choice(["", "", " "])
    ids, offsets = [], []
    for k in range(n_tokens):
        kind = rng.random()
        if k and kind < 0.3:
            token = rng.choice(PIECES)
            surface = token[2:]
        elif kind < 0.4:
            token = "[UNK]"
            surface = rng.choice(UNKNOWN_TEXTS)
        else:
            token = rng.choice(WORDS)
            surface = token + ("\u0301" if rng.random() < 0.1 else "")
        if k and not token.startswith("##"):
            text += rng.choice([" ", " ", " ", "  ", "", "-", "\n"])
        ids.append(VOCABULARY.index(token))
        offsets.append((len(text), len(text) + len(surface)))
        text += surface
    item = Annotated(Document(str(index), "src", index, text), -1, {})
    return Tokenized(
        item, np.asarray(ids, dtype=np.int32), np.asarray(offsets, dtype=np.int32).reshape(-1, 2)
    )


def random_logits(rng: np.random.Generator, n_tokens: int, n_labels: int, ties: bool) -> np.ndarray:
    """Logits for one row; with ``ties``, small integers, so that equal scores (first-of-equals) occur."""
    if ties:
        return rng.integers(0, 3, (n_tokens, n_labels)).astype(np.float32)
    return rng.normal(0, 3, (n_tokens, n_labels)).astype(np.float32)


def handler_for(strategy: str, body: int, stride: int | None, tokenizer: Tokenizer, names: tuple[str, ...]):
    """A ner handler whose windows hold ``body`` document tokens, and its model: none, the test gives the
    logits (see ``give_logits``)."""
    settings_ = ner.Settings(model="unused", aggregation=strategy, stride=stride)
    handler = ner.Handler("t", settings_, Runtime(device="cpu"), 512, body + 2, (PREFIX, SUFFIX))
    loaded = Loaded(
        model=None,
        device="cpu",
        autocast_dtype=None,
        pad_id=0,
        tokenizer=tokenizer,
        id2label=dict(enumerate(names)),
        problem_type=None,
    )
    return handler, loaded


def give_logits(handler, loaded, documents, logits_for) -> list[np.ndarray]:
    """Makes the handler's model answer ``logits_for(row length)`` for each row of ``documents``."""
    rows, _ = handler.rows(documents, loaded)
    logits = [logits_for(len(row)) for row in rows]
    handler.forward = lambda rows, model, types=None: logits
    return logits


def run(
    documents: list[Tokenized],
    names: tuple[str, ...],
    strategy: str,
    body: int,
    stride: int | None,
    word_aware: bool,
    seed: int = 0,
    ties: bool = False,
) -> tuple[list, list]:
    """Both implementations on the same random logits: (ours, the reference's)."""
    tokenizer = Tokenizer(word_aware)
    handler, loaded = handler_for(strategy, body, stride, tokenizer, names)
    rng = np.random.default_rng(seed)
    logits = give_logits(handler, loaded, documents, lambda n: random_logits(rng, n, len(names), ties))
    ours = handler.annotate(documents, loaded)
    return ours, reference(documents, logits, body, stride, tokenizer, loaded.id2label, strategy)


def assert_same(ours: list, expected: list) -> None:
    """The same entities, spans, texts and scores, to the last bit, and the same Python types."""
    assert ours == expected
    assert all(type(e["start"]) is int and type(e["score"]) is float for got in ours for e in got)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(STRATEGIES),
    names=st.sampled_from(LABEL_SETS),
    word_aware=st.booleans(),
    body=st.integers(1, 12),
    stride=st.one_of(st.none(), st.integers(0, 11)),
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    ties=st.booleans(),
)
def test_a_batch_at_once_equals_the_per_token_reference(
    seed, strategy, names, word_aware, body, stride, lengths, ties
):
    stride = None if stride is None else stride % body  # a stride is below the window's tokens
    rng = random.Random(seed)
    documents = [document(rng, n, i) for i, n in enumerate(lengths)]
    ours, expected = run(documents, names, strategy, body, stride, word_aware, seed, ties)
    assert_same(ours, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("word_aware", [True, False])
def test_empty_documents_and_one_token_windows(strategy, word_aware):
    rng = random.Random(3)
    documents = [document(rng, n, i) for i, n in enumerate([0, 1, 0, 7, 2, 0])]
    for body, stride in ((1, 0), (1, None), (2, 1), (3, 0)):
        ours, expected = run(documents, LABEL_SETS[1], strategy, body, stride, word_aware, seed=body)
        assert_same(ours, expected)
        assert ours[0] == ours[2] == ours[5] == []
    ours, expected = run(documents[:1] * 3, LABEL_SETS[0], strategy, 4, 1, word_aware)
    assert ours == expected == [[], [], []]


@pytest.mark.parametrize("word_aware", [True, False])
def test_an_unknown_token_is_its_own_word(word_aware):
    """The word "unaffable" is three pieces, one word; the unknown token glued to "x" starts its own."""
    text = "unaffable x👍"
    pieces = [("un", 0, 2), ("##aff", 2, 5), ("##able", 5, 9), ("x", 10, 11), ("[UNK]", 11, 12)]
    item = Annotated(Document("d", "src", 0, text), -1, {})
    ids = np.asarray([VOCABULARY.index(t) for t, _, _ in pieces], dtype=np.int32)
    offsets = np.asarray([(s, e) for _, s, e in pieces], dtype=np.int32)
    tokenized = Tokenized(item, ids, offsets)
    vocabulary = ner.vocabulary(Tokenizer(word_aware))
    logits = [np.zeros((len(ids) + 2, 3), dtype=np.float32)]
    tokens = ner.window_tokens([tokenized], [windows(len(ids), 10, None)], logits, 1, vocabulary)
    assert tokens.is_subword.tolist() == [False, True, True, False, False]
    assert tokens.scores.shape == (5, 3) and np.allclose(tokens.scores, 1 / 3)


def test_the_vocabulary_is_read_once_per_tokenizer():
    rng = random.Random(5)
    documents = [document(rng, n, i) for i, n in enumerate([30, 4, 12])]
    tokenizer = Tokenizer(word_aware=True)
    first = ner.vocabulary(tokenizer)
    assert ner.vocabulary(tokenizer) is first and tokenizer.lookups == 1
    handler, loaded = handler_for("simple", 6, 2, tokenizer, LABEL_SETS[0])
    give_logits(handler, loaded, documents, lambda n: np.zeros((n, len(LABEL_SETS[0])), dtype=np.float32))
    for _ in range(3):
        handler.annotate(documents, loaded)
    assert tokenizer.lookups == 1


def test_the_vocabulary_matches_a_real_tokenizer(models_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models_dir / "tokenizer"))
    vocabulary = ner.vocabulary(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert vocabulary.word_aware
    assert vocabulary.token_lengths.tolist() == [len(t) for t in tokens]
    assert vocabulary.unk_id == tokenizer.unk_token_id


# -- the reference: transformers' token-classification post-processing, one token and one window at a time


def reference(documents, logits, body, stride, tokenizer, id2label, strategy):
    word_aware = bool(tokenizer._tokenizer.model.continuing_subword_prefix)
    rows = iter(logits)
    out = []
    for tokenized in documents:
        entities = []
        spans = windows(len(tokenized.ids), body, stride)
        for start, end in spans:
            row_logits = next(rows)[len(PREFIX) : len(PREFIX) + end - start]
            entities += _window_entities(
                tokenized, start, end, row_logits, tokenizer, id2label, word_aware, strategy
            )
        if len(spans) > 1:
            entities = ner.merge_overlapping(entities)  # unchanged: the reference shares it
        text = tokenized.item.doc.text
        out.append(
            [
                {
                    "label": e["label"],
                    "text": text[e["start"] : e["end"]],
                    "start": int(e["start"]),
                    "end": int(e["end"]),
                    "score": float(e["score"]),
                }
                for e in entities
            ]
        )
    return out


def _window_entities(tokenized, start, end, logits, tokenizer, id2label, word_aware, strategy):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores = shifted / shifted.sum(axis=-1, keepdims=True)
    text = tokenized.item.doc.text
    ids = tokenized.ids[start:end]
    words = [VOCABULARY[i] for i in ids.tolist()]
    tokens = []
    for k, (token_id, word) in enumerate(zip(ids, words, strict=True)):
        s, e = (int(v) for v in tokenized.offsets[start + k])
        ref = text[s:e]
        if word_aware:
            is_subword = len(word) != len(ref)
        else:
            is_subword = s > 0 and " " not in text[s - 1 : s + 1]
        if int(token_id) == tokenizer.unk_token_id:
            word, is_subword = ref, False
        tokens.append({"word": word, "scores": scores[k], "start": s, "end": e, "is_subword": is_subword})
    if strategy in ("none", "simple"):
        labelled = [_labelled(t["scores"], t, id2label) for t in tokens]
    else:
        labelled = [_word(group, strategy, id2label) for group in _words(tokens)]
    if strategy != "none":
        labelled = _group(labelled)
    return [e for e in labelled if e["label"] not in ("O",)]


def _labelled(scores, token, id2label):
    best = int(scores.argmax())
    return {"label": id2label[best], "score": scores[best], "start": token["start"], "end": token["end"]}


def _words(tokens):
    groups = []
    for token in tokens:
        if groups and token["is_subword"]:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def _word(tokens, strategy, id2label):
    if strategy == "first":
        scores = tokens[0]["scores"]
    elif strategy == "max":
        scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
    else:
        scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
    best = int(scores.argmax())
    return {
        "label": id2label[best],
        "score": scores[best],
        "start": tokens[0]["start"],
        "end": tokens[-1]["end"],
    }


def _tag(label):
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _group(entities):
    groups = []
    for entity in entities:
        bi, tag = _tag(entity["label"])
        if groups and tag == _tag(groups[-1][-1]["label"])[1] and bi != "B":
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [
        {
            "label": group[0]["label"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in group])),
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }
        for group in groups
    ]
