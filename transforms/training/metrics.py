"""What a training run is judged by: accuracy and macro-F1 for classification (exact-match accuracy and
micro/macro-F1 over labels for multi-label), entity precision, recall and F1 (seqeval, exact spans) for
ner, and a TF-IDF + logistic-regression baseline on the same split, so a fine-tuned model can be seen to
beat a trivial one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from distilbeam.transforms.training.data import Example
from distilbeam.transforms.training.encode import IGNORE


def classify_scores(gold: np.ndarray, predicted: np.ndarray, multi_label: bool) -> dict[str, float]:
    """gold and predicted: class ids [n], or multi-hot rows [n, labels] for multi-label."""
    from sklearn.metrics import accuracy_score, f1_score

    scores = {"accuracy": float(accuracy_score(gold, predicted))}
    scores["macro_f1"] = float(f1_score(gold, predicted, average="macro", zero_division=0))
    if multi_label:
        scores["micro_f1"] = float(f1_score(gold, predicted, average="micro", zero_division=0))
    return scores


def predictions(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Class ids (argmax), or multi-hot rows (sigmoid above one half, that is logit above 0)."""
    return (logits > 0).astype(int) if multi_label else logits.argmax(axis=-1)


def entity_scores(gold: np.ndarray, predicted: np.ndarray, tags: Sequence[str]) -> dict[str, float]:
    """seqeval's exact-span precision, recall and F1 over the tokens that have a target."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    truth, guess = tag_sequences(gold, predicted, tags)
    return {
        "precision": float(precision_score(truth, guess, zero_division=0)),
        "recall": float(recall_score(truth, guess, zero_division=0)),
        "f1": float(f1_score(truth, guess, zero_division=0)),
        "token_accuracy": float(np.mean(gold[gold != IGNORE] == predicted[gold != IGNORE])),
    }


def tag_sequences(gold: np.ndarray, predicted: np.ndarray, tags: Sequence[str]) -> tuple[list, list]:
    truth, guess = [], []
    for g_row, p_row in zip(gold, predicted, strict=True):
        keep = g_row != IGNORE
        truth.append([tags[t] for t in g_row[keep]])
        guess.append([tags[t] for t in p_row[keep]])
    return truth, guess


def metric_function(task: str, multi_label: bool, tags: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """The Trainer's ``compute_metrics`` for the task."""

    def compute(prediction: Any) -> dict[str, float]:
        logits, gold = prediction.predictions, prediction.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        if task == "ner":
            return entity_scores(np.asarray(gold), np.asarray(logits).argmax(axis=-1), tags)
        gold = np.asarray(gold).astype(int) if multi_label else np.asarray(gold)
        return classify_scores(gold, predictions(np.asarray(logits), multi_label), multi_label)

    return compute


def baseline(
    train: Sequence[Example], validation: Sequence[Example], labels: Sequence[str], multi_label: bool
) -> dict[str, float]:
    """TF-IDF over word uni- and bigrams with logistic regression (one per label for multi-label), fitted
    on the training split and scored on the validation split; sentence pairs as one text."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    def text(e: Example) -> str:
        return e.text if e.pair is None else f"{e.text} [SEP] {e.pair}"

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform([text(e) for e in train])
    x_val = vectorizer.transform([text(e) for e in validation])
    y_train, y_val = targets(train, labels, multi_label), targets(validation, labels, multi_label)
    model = LogisticRegression(max_iter=2000, C=4.0)
    if multi_label:
        model = OneVsRestClassifier(model)
    model.fit(x_train, y_train)
    return classify_scores(y_val, model.predict(x_val), multi_label)


def targets(examples: Sequence[Example], labels: Sequence[str], multi_label: bool) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    if not multi_label:
        return np.array([index[e.label] for e in examples])
    out = np.zeros((len(examples), len(labels)), dtype=int)
    for row, e in enumerate(examples):
        for label in e.labels():
            out[row, index[label]] = 1
    return out
