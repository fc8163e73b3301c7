"""``qa``: parity with transformers' question-answering pipeline, and long documents read in windows.

transformers 5 removed ``pipeline("question-answering")`` (its last release with it is 4.57). The reference
here is that pipeline's algorithm, step for step, on transformers' own parts: the tokenizer encodes the
question/context pair with ``truncation="only_second"``, ``stride`` and overflowing windows, the model runs
on each window alone (no padding), ``select_starts_ends`` (the function the pipeline called, still shipped
in transformers 5) picks the spans, and the encoding's ``token_to_word``/``word_to_chars`` widen them to
words. Our handler shares none of that code path: it frames the document's own token ids itself, batches
rows of several documents and questions, and picks and widens spans on its own."""

from __future__ import annotations

import functools
import re

import pyarrow as pa
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
from transformers.pipelines.document_question_answering import select_starts_ends

from distilbeam.transforms import SetupError
from tests.transforms.handlers import build_task, handler_for

QUESTIONS = ["Where did they fly?", "Who met at the museum?", "What was reported?", "When?"]
CONTEXTS = [
    "Bob and Carol flew from Tokyo to Madrid with Initech; the flight was on time!",
    "Alice Johnson, Grace Williams and Erin Frank met at the Vienna museum on Monday morning.",
    "ACME Corp. (NYSE: ACM) reported $3.5bn revenue in Q3, up 12% y/y.",
    "Très bon restaurant à Lyon — le service était impeccable! 👍",
    "naïve café résumé coöperate Zürich São Paulo",
    "東京 and 北京 are capitals; مرحبا بالعالم; שלום",
    'He said: "Don\'t!" -- then left... (quickly)',
    "x",
    "\tTabs\tand\nnewlines\r\ninside one document\u00a0with nbsp",
    "the museum opened in march and the hotel closed in october; the film was boring. " * 3,
]


def reference_answer(model_dir, question, context, max_seq_len=384, doc_stride=None, no_answer=False):
    """transformers 4.57 ``QuestionAnsweringPipeline`` (fast tokenizer, top_k=1, max_answer_len=15,
    align_to_words=True): preprocess, forward per window, postprocess. One difference, documented in
    ``transforms/tasks/qa.py``: equal answers add up their scores within a window, not across windows."""
    tokenizer, model = _load(model_dir)
    max_seq_len = min(tokenizer.model_max_length, max_seq_len)
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    encoded = tokenizer(
        text=question,
        text_pair=context,
        padding="do_not_pad",
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    min_null_score = 1000000
    best = []
    for span in range(len(encoded["input_ids"])):
        answers = []
        ids = encoded["input_ids"][span]
        p_mask = [tok != 1 for tok in encoded.sequence_ids(span)]
        for cls_index in [i for i, t in enumerate(ids) if t == tokenizer.cls_token_id]:
            p_mask[cls_index] = 0
        inputs = {k: torch.tensor([encoded[k][span]]) for k in tokenizer.model_input_names}
        with torch.no_grad():
            output = model(**inputs)
        starts, ends, scores, min_null_score = select_starts_ends(
            output.start_logits,
            output.end_logits,
            p_mask,
            inputs["attention_mask"].numpy(),
            min_null_score,
            12,
            no_answer,
            15,
        )
        enc = encoded[span]
        for s, e, score in zip(starts, ends, scores, strict=True):
            try:
                start = enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0]
                end = enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]
            except Exception:
                start, end = enc.offsets[s][0], enc.offsets[e][1]
            same = next((a for a in answers if a["answer"].lower() == context[start:end].lower()), None)
            if same:
                same["score"] += score.item()
            else:
                answers.append(
                    {"score": score.item(), "start": start, "end": end, "answer": context[start:end]}
                )
        best += sorted(answers, key=lambda a: a["score"], reverse=True)[:1]
    if no_answer:
        best.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    return sorted(best, key=lambda a: a["score"], reverse=True)[0]


@functools.cache
def _load(model_dir):
    return (
        AutoTokenizer.from_pretrained(str(model_dir)),
        AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval(),
    )


def assert_same(got, want, question, context):
    assert got["question"] == question
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"]), context
    assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    assert got["answer"] == context[got["start"] : got["end"]]


@pytest.mark.parametrize("model", ["qa", "qa-cased", "qa-bert"])
def test_qa_matches_question_answering_pipeline(task_models, annotate, model):
    ours = annotate(task_models / model, "qa", CONTEXTS, questions=QUESTIONS)
    for context, answers in zip(CONTEXTS, ours, strict=True):
        assert [a["question"] for a in answers] == QUESTIONS
        for question, got in zip(QUESTIONS, answers, strict=True):
            assert_same(got, reference_answer(task_models / model, question, context), question, context)


def test_qa_long_documents_match_the_pipelines_windows(task_models, annotate):
    """Documents many windows long (rows of 40 tokens, windows overlapping by 8), and the no-answer rule."""
    from distilbeam.transforms.tasks import demo_models

    sentences = demo_models.corpus(60, seed=11)
    contexts = [" ".join(sentences[i : i + 12]) for i in range(0, 60, 12)]
    for no_answer in (False, True):
        ours = annotate(
            task_models / "qa",
            "qa",
            contexts,
            questions=QUESTIONS[:2],
            max_length=40,
            stride=8,
            allow_no_answer=no_answer,
        )
        for context, answers in zip(contexts, ours, strict=True):
            for question, got in zip(QUESTIONS[:2], answers, strict=True):
                want = reference_answer(task_models / "qa", question, context, 40, 8, no_answer)
                assert_same(got, want, question, context)


def test_qa_finds_answers_anywhere_in_a_long_document(lexicon_models, annotate):
    """The lexicon model answers "paris", or "alice ... wayne", wherever they are: far past the first
    window, and across window boundaries."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(lexicon_models / "qa"))
    filler = "the good movie was very slow and the staff were quite boring ; " * 40
    for at in range(150, 180):  # moves the answer across several window boundaries
        words = filler.split()
        document = " ".join(words[:at]) + " alice wayne " + " ".join(words[at:])
        start = document.index("alice wayne")
        (result,) = annotate(
            lexicon_models / "qa", "qa", [document], questions=["who?"], max_length=32, stride=6
        )
        (answer,) = result
        assert len(tokenizer.encode(document, add_special_tokens=False)) > 10 * 32
        assert (answer["answer"], answer["start"], answer["end"]) == ("alice wayne", start, start + 11)
        assert answer["score"] > 0.9


def test_qa_min_score_empties_weak_answers(task_models, annotate):
    texts = [*CONTEXTS[:3], ""]
    plain = annotate(task_models / "qa", "qa", texts, questions=QUESTIONS[:1])
    strict = annotate(task_models / "qa", "qa", texts, questions=QUESTIONS[:1], min_score=0.5)
    for (weak,), (empty,) in zip(plain[:3], strict[:3], strict=True):
        assert weak["score"] < 0.5 and weak["answer"]  # random weights: no answer is sure of itself
        assert (empty["answer"], empty["start"], empty["end"]) == ("", 0, 0)
        assert empty["score"] == pytest.approx(weak["score"])
    (nothing,) = plain[3]  # an empty document has nothing to answer from
    assert (nothing["answer"], nothing["start"], nothing["end"], nothing["score"]) == ("", 0, 0, 0.0)


def test_qa_output_fits_its_arrow_type(task_models, annotate):
    handler, _, identity = build_task("qa", task_models / "qa", questions=QUESTIONS)
    assert "labels" not in identity
    rows = annotate(task_models / "qa", "qa", CONTEXTS, questions=QUESTIONS)
    column = pa.array(rows, type=handler.arrow_type())
    assert column.type == pa.list_(
        pa.struct(
            [
                ("question", pa.string()),
                ("answer", pa.string()),
                ("start", pa.int32()),
                ("end", pa.int32()),
                ("score", pa.float32()),
            ]
        )
    )


def test_qa_cost_counts_every_row(task_models):
    """The token budget sees what the model will get: one row per question and context window."""
    questions = ["Who?", "Where did the company open its new museum?"]
    handler = handler_for("qa", task_models / "qa", questions=questions, max_length=48)
    tokenizer = AutoTokenizer.from_pretrained(str(task_models / "qa"))
    assert len(tokenizer.encode("x " * 100, add_special_tokens=False)) == 100
    for n in (0, 1, 20, 47, 200, 1000):
        expected = 0
        for q in questions:
            if n:  # the tokenizer's own windows over a context of n tokens (stride: 48 // 2)
                pairs = tokenizer(
                    q,
                    "x " * n,
                    truncation="only_second",
                    max_length=48,
                    stride=24,
                    return_overflowing_tokens=True,
                )
                expected += len(pairs["input_ids"])
        rows, length = handler.cost(n)
        assert rows == expected
        assert length <= 48


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"questions": []}, "questions: list at least one question"),
        ({"questions": ["who?"], "max_length": 16, "stride": 12}, "questions[0]"),
        ({"questions": ["who?"], "max_answer_tokens": 0}, "max_answer_tokens"),
    ],
)
def test_qa_settings_are_checked_before_the_run(task_models, settings, message):
    with pytest.raises(SetupError, match=re.escape(message)):
        build_task("qa", task_models / "qa", **settings)


def test_qa_refuses_a_model_without_a_question_answering_head(models_dir):
    with pytest.raises(SetupError, match="ForQuestionAnswering"):
        build_task("qa", models_dir / "classifier", questions=["who?"])
