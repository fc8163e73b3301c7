"""Training for ``distilbeam train`` and ``distilbeam distil``: labelled data read and checked (``data``),
encoded and batched by a token budget (``encode``), fine-tuned with ``transformers.Trainer``
(``finetune``), scored beside a TF-IDF baseline (``metrics``), distilled into a smaller student
(``distil``), and saved as a model directory ``distilbeam run`` loads, with its card and report
(``save``, ``card``, ``report``)."""
