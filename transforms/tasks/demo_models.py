"""Small DistilBERT models with random weights and a WordPiece tokenizer trained on made-up sentences, built
locally from a config: the models of ``distilbeam demo-models`` (see ``pipeline/demo.py``) and of the tests.
Their labels mean nothing; ``RANDOM_WEIGHTS_KEY`` in their config.json marks them, and the run's identity
says so."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

RANDOM_WEIGHTS_KEY = "distilbeam_random_weights"  # in config.json of a model built here
SENTIMENT_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

_WORDS = """
the a an of to in and or but is was are were be been has have had it its this that these those for
on with as at by from about into over after before under between through during without within good
bad great terrible excellent awful fine poor lovely boring exciting slow fast cheap expensive movie
film book story song album game phone laptop camera hotel restaurant meal service staff room city
river country company team market school hospital station airport bridge museum festival said
reported announced visited opened closed bought sold wrote played watched liked hated loved paris
london berlin tokyo madrid rome vienna oslo cairo lima alice bob carol dave erin frank grace acme
globex initech umbrella stark wayne cyberdyne monday tuesday friday january march october one two
three four five ten hundred thousand million year years day days week night morning very really
quite rather too not never always often sometimes again still just only even also
""".split()  # noqa: SIM905 (a word list reads better as prose)


def corpus(n_sentences: int = 2000, seed: int = 0) -> list[str]:
    """Made-up sentences from a fixed word list, with punctuation and digits, to train a tokenizer on."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 20))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2030)))
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + rng.choice(".!?,;:"))
    return sentences


def build_tokenizer(out: Path, texts: Iterable[str], vocab_size: int = 1500, lowercase: bool = True) -> None:
    """Trains a BERT-style WordPiece vocabulary and saves it as a DistilBERT fast tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import DistilBertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=lowercase)
    wordpiece.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    # transformers 5 builds the tokenizer from a vocabulary mapping; a ``vocab_file`` argument is ignored
    # and leaves a tokenizer that knows only its special tokens.
    tokenizer = DistilBertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=lowercase)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(out))


def build_model(
    out: Path,
    head: str,
    labels: Sequence[str],
    tokenizer_dir: Path,
    *,
    dim: int = 64,
    layers: int = 2,
    heads: int = 2,
    hidden: int = 128,
    seed: int = 0,
    problem_type: str | None = None,
) -> Path:
    """A DistilBERT model with random weights and the tokenizer from ``tokenizer_dir``, saved to ``out``.
    ``head`` is ``sequence``, ``token``, ``qa`` (question answering) or ``encoder`` (no head)."""
    import torch
    from transformers import (
        AutoTokenizer,
        DistilBertConfig,
        DistilBertForQuestionAnswering,
        DistilBertForSequenceClassification,
        DistilBertForTokenClassification,
        DistilBertModel,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=hidden,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        # labels name a classifier's outputs; question answering and plain encoders have none to name
        **(
            {"id2label": dict(enumerate(labels)), "label2id": {x: i for i, x in enumerate(labels)}}
            if labels
            else {}
        ),
    )
    if problem_type:
        config.problem_type = problem_type
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    torch.manual_seed(seed)
    cls = {
        "sequence": DistilBertForSequenceClassification,
        "token": DistilBertForTokenClassification,
        "qa": DistilBertForQuestionAnswering,
        "encoder": DistilBertModel,
    }[head]
    model = cls(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))  # safetensors
    tokenizer.save_pretrained(str(out))
    return out
