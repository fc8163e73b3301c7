"""``qa``: extractive question answering, the same questions asked of every document.

Each model row is ``[CLS] question [SEP] context window [SEP]``, built from the question's token ids (taken
once when the pipeline is built) and the document's own ids, so the document is still tokenized once. Long
documents are read in context windows overlapping by ``stride`` tokens. Answers are chosen as
``transformers``' question-answering pipeline chooses them (``max_seq_len`` 384, ``doc_stride`` 128,
``max_answer_len`` 15, ``align_to_words``): per window, the 12 best spans by start x end probability,
widened to whole words; spans with the same text (ignoring case) add up their scores; the best one wins.
Across the windows of a long document the best window's answer wins, where that pipeline would add up
equal answers from every window too: text repeated through a long document would then outscore a better
answer found once, and a score would no longer be a probability. ``answer`` is always the document's own
characters ``document[start:end]``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from distilbeam.transforms import SetupError
from distilbeam.transforms.batching import Tokenized, windows
from distilbeam.transforms.tasks.base import Loaded, TaskHandler, TaskSettings

ARROW_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("question", pa.string()),
            pa.field("answer", pa.string()),
            pa.field("start", pa.int32()),
            pa.field("end", pa.int32()),
            pa.field("score", pa.float32()),
        ]
    )
)
CANDIDATES_PER_WINDOW = 12  # transformers: top_k * 2 + 10 spans per window when answers align to words
MASKED = -10000.0  # the logit transformers gives positions that cannot be part of an answer


@dataclasses.dataclass(frozen=True)
class Settings(TaskSettings):
    kind = "qa"
    # Asked of every document; one answer per question, in this order.
    questions: tuple[str, ...] = ()
    # Tokens per row: question, context window and special tokens (transformers' max_seq_len).
    max_length: int | None = 384
    # Tokens shared by consecutive context windows; null: min(max_length // 2, 128), transformers' doc_stride.
    stride: int | None = None
    # Longest answer, in tokens (transformers' max_answer_len).
    max_answer_tokens: int = 15
    # An answer scoring below this comes out empty: answer "", start 0, end 0, and its score.
    min_score: float = 0.0
    # For models trained to point at [CLS] when there is no answer (SQuAD 2.0): the empty answer wins when
    # its score beats every span's (transformers' handle_impossible_answer).
    allow_no_answer: bool = False


@dataclasses.dataclass(frozen=True)
class PairFrame:
    """Special tokens around a question/context pair, and the token type of each part."""

    prefix: tuple[int, ...]  # before the question: [CLS]
    middle: tuple[int, ...]  # between question and context: [SEP]
    suffix: tuple[int, ...]  # after the context: [SEP]
    question_type: int
    context_type: int
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def pair_frame(tokenizer: Any) -> PairFrame:
    """Reads the frame off the tokenizer's own encoding of a question/context pair."""
    encoded = tokenizer("a", "b", return_token_type_ids=True)
    ids = list(encoded["input_ids"])
    types = list(encoded.get("token_type_ids") or [0] * len(ids))
    sequence = encoded.sequence_ids()
    first = [i for i, s in enumerate(sequence) if s == 0]
    second = [i for i, s in enumerate(sequence) if s == 1]
    if not first or not second or first[-1] >= second[0]:
        raise SetupError(f"cannot tell how {type(tokenizer).__name__} frames a question and a context")
    q_end, c_start, c_end = first[-1] + 1, second[0], second[-1] + 1
    return PairFrame(
        prefix=tuple(ids[: first[0]]),
        middle=tuple(ids[q_end:c_start]),
        suffix=tuple(ids[c_end:]),
        question_type=types[first[0]],
        context_type=types[c_start],
        prefix_types=tuple(types[: first[0]]),
        middle_types=tuple(types[q_end:c_start]),
        suffix_types=tuple(types[c_end:]),
    )


@dataclasses.dataclass(frozen=True)
class _Row:
    doc: int
    question: int
    start: int  # the window's first and past-last document token
    end: int
    context_at: int  # position of the window's first token in the row


class Handler(TaskHandler):
    auto_class_name = "AutoModelForQuestionAnswering"
    architecture_suffix = "ForQuestionAnswering"
    labelled = False

    def resolve_model(self, tokenizer: Any, config: Mapping[str, Any]) -> None:
        if tokenizer.padding_side != "right":
            raise SetupError(
                f"model {self.settings.model}: its tokenizer puts the context before the question "
                "(padding_side left), which qa does not support"
            )
        self.frame = pair_frame(tokenizer)
        self.question_ids = [
            np.asarray(tokenizer.encode(q, add_special_tokens=False), dtype=np.int32)
            for q in self.settings.questions
        ]
        self.pass_types = "token_type_ids" in tokenizer.model_input_names
        self.cls_id = tokenizer.cls_token_id
        wordpiece = tokenizer.backend_tokenizer.model
        is_wordpiece = type(wordpiece).__name__ == "WordPiece"
        self.word_prefix = wordpiece.continuing_subword_prefix if is_wordpiece else None

    def model_output(self, output: Any, attention_mask: Any) -> Any:
        import torch

        return torch.stack([output.start_logits, output.end_logits], dim=-1)

    def doc_stride(self) -> int:
        if self.settings.stride is not None:
            return self.settings.stride
        return min(self.max_length // 2, 128)

    def body_for(self, question: int) -> int:
        """Context tokens per row for one question."""
        return self.max_length - self.frame.n_special - len(self.question_ids[question])

    def settings_problem(self) -> str | None:
        if not self.settings.questions:
            return "questions: list at least one question"
        if self.settings.max_answer_tokens < 1:
            return f"max_answer_tokens: must be at least 1, got {self.settings.max_answer_tokens}"
        stride = self.doc_stride()
        for q, text in enumerate(self.settings.questions):
            body = self.body_for(q)
            if not 0 <= stride < body:
                return (
                    f"questions[{q}]: {text!r} leaves {body} context tokens per row of max_length "
                    f"{self.max_length}, which must be more than the stride ({stride}); shorten the "
                    "question, raise max_length or lower stride"
                )
        return None

    def cost(self, n_tokens: int) -> tuple[int, int]:
        rows, longest = 0, self.frame.n_special
        for q in range(len(self.question_ids)):
            spans = [(s, e) for s, e in windows(n_tokens, self.body_for(q), self.doc_stride()) if e > s]
            rows += len(spans)
            if spans:
                widest = max(e - s for s, e in spans)
                longest = max(longest, self.frame.n_special + len(self.question_ids[q]) + widest)
        return rows, longest

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[list[dict[str, Any]]]:
        f = self.frame
        heads = [
            (
                np.concatenate([f.prefix, question, f.middle]).astype(np.int32),
                np.concatenate([f.prefix_types, np.full(len(question), f.question_type), f.middle_types]),
            )
            for question in self.question_ids
        ]
        rows, types, where = [], [], []
        for d, tokenized in enumerate(items):
            for q, (head, head_types) in enumerate(heads):
                for start, end in windows(len(tokenized.ids), self.body_for(q), self.doc_stride()):
                    if end == start:  # an empty document has nothing to answer from
                        continue
                    context = tokenized.ids[start:end]
                    rows.append(np.concatenate([head, context, f.suffix]).astype(np.int32))
                    if self.pass_types:
                        row_types = [head_types, np.full(end - start, f.context_type), f.suffix_types]
                        types.append(np.concatenate(row_types).astype(np.int32))
                    where.append(_Row(d, q, start, end, len(head)))
        logits = self.forward(rows, model, types if self.pass_types else None) if rows else []
        per_question: dict[tuple[int, int], list[tuple[_Row, np.ndarray, np.ndarray]]] = {}
        for row, ids, values in zip(where, rows, logits, strict=True):
            per_question.setdefault((row.doc, row.question), []).append((row, ids, values))
        out = []
        for d, tokenized in enumerate(items):
            subword = self._subword_flags(tokenized, model)
            answers = []
            for q, text in enumerate(self.settings.questions):
                best = self._best_answer(tokenized, subword, per_question.get((d, q), []))
                answers.append({"question": text, **best})
            out.append(answers)
        return out

    def _subword_flags(self, tokenized: Tokenized, model: Loaded) -> np.ndarray | None:
        """Whether each document token continues the word before it (WordPiece tokenizers only)."""
        if not self.word_prefix or not len(tokenized.ids):
            return None
        pieces = model.tokenizer.convert_ids_to_tokens(tokenized.ids.tolist())
        return np.fromiter((p.startswith(self.word_prefix) for p in pieces), dtype=bool, count=len(pieces))

    def _best_answer(
        self,
        tokenized: Tokenized,
        subword: np.ndarray | None,
        scored: list[tuple[_Row, np.ndarray, np.ndarray]],
    ) -> dict[str, Any]:
        text = tokenized.item.doc.text
        best: dict[str, Any] | None = None
        null_score = 1_000_000.0  # transformers' starting value: large and positive
        for row, ids, values in scored:
            starts, ends, scores, null = select_spans(
                values[:, 0],
                values[:, 1],
                row.context_at,
                row.end - row.start,
                ids,
                self.cls_id,
                self.settings.max_answer_tokens,
            )
            null_score = min(null_score, null)
            answers: list[dict[str, Any]] = []  # this window's answers
            for s, e, score in zip(starts, ends, scores, strict=True):
                # Only spans inside the context can score above zero; the rest cannot win or add up.
                if score <= 0 or s < row.context_at or e >= row.context_at + row.end - row.start:
                    continue
                first = row.start + int(s) - row.context_at
                last = row.start + int(e) - row.context_at
                if subword is not None:  # widen to whole words, within this window as transformers does
                    while first > row.start and subword[first]:
                        first -= 1
                    while last + 1 < row.end and subword[last + 1]:
                        last += 1
                char_start = int(tokenized.offsets[first][0])
                char_end = int(tokenized.offsets[last][1])
                answer = text[char_start:char_end]
                same = next((a for a in answers if a["answer"].lower() == answer.lower()), None)
                if same is not None:
                    same["score"] += float(score)
                else:
                    answers.append(
                        {"answer": answer, "start": char_start, "end": char_end, "score": float(score)}
                    )
            # The best window wins: adding up equal answers across windows (as transformers does) would let
            # text repeated through a long document outscore a better answer found once.
            for answer in answers:  # the first of equals, as a stable sort keeps it
                if best is None or answer["score"] > best["score"]:
                    best = answer
        if self.settings.allow_no_answer and scored and (best is None or null_score > best["score"]):
            best = {"answer": "", "start": 0, "end": 0, "score": null_score}
        if best is None:
            return {"answer": "", "start": 0, "end": 0, "score": 0.0}
        if best["score"] < self.settings.min_score:
            return {"answer": "", "start": 0, "end": 0, "score": best["score"]}
        return best

    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPE


def select_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_at: int,
    context_len: int,
    ids: np.ndarray,
    cls_id: int | None,
    max_answer_tokens: int,
    top_k: int = CANDIDATES_PER_WINDOW,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The ``top_k`` best (start, end) row positions of one row with their scores, and the row's no-answer
    score: start and end logits softmaxed over the context (and [CLS]), spans scored by the product of
    their start and end probabilities, at most ``max_answer_tokens`` long. The arithmetic, in float32, is
    that of transformers' ``select_starts_ends`` and ``decode_spans``, so ties break the same way."""
    allowed = np.zeros(len(ids), dtype=np.int64)
    allowed[context_at : context_at + context_len] = 1
    if cls_id is not None:
        allowed[np.asarray(ids) == cls_id] = 1
    blocked = allowed == 0
    start = np.where(blocked, MASKED, start_logits.astype(np.float32))[None]
    end = np.where(blocked, MASKED, end_logits.astype(np.float32))[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    null = float((start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_tokens - 1)
    flat = candidates.flatten()
    if len(flat) <= top_k:
        order = np.argsort(-flat)
    else:
        best = np.argpartition(-flat, top_k)[0:top_k]
        order = best[np.argsort(-flat[best])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends], null
