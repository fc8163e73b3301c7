"""The locally built demo models: their tokenizers know the words they were trained on (a tokenizer that
knows only its special tokens turns every word into [UNK] and makes every test on it say little)."""

from __future__ import annotations

import json

from distilbeam.pipeline import demo
from distilbeam.transforms import models


def test_demo_tokenizer_knows_its_corpus(models_dir):
    tokenizer = models.load_tokenizer(models_dir / "tokenizer")
    assert len(tokenizer) > 500
    sentence = "The hotel in Paris was lovely, said Alice on Monday."
    tokens = tokenizer.tokenize(sentence)
    assert tokenizer.unk_token not in tokens
    assert tokens[:4] == ["the", "hotel", "in", "paris"]
    pieces = tokenizer.tokenize("hotelling")
    assert pieces[0] == "hotel"
    assert all(p.startswith("##") for p in pieces[1:]) and len(pieces) > 1


def test_cased_demo_tokenizer_keeps_case(models_dir):
    tokenizer = models.load_tokenizer(models_dir / "tokenizer-cased")
    assert tokenizer.tokenize("Paris and paris")[0] == "Paris"
    assert tokenizer.unk_token not in tokenizer.tokenize("Paris and paris")


def test_demo_models_embed_the_whole_vocabulary(models_dir):
    tokenizer = models.load_tokenizer(models_dir / "tokenizer")
    for name in ("classifier", "ner"):
        config = json.loads((models_dir / name / "config.json").read_text())
        assert config["vocab_size"] == len(tokenizer)
        assert config[demo.RANDOM_WEIGHTS_KEY] is True
