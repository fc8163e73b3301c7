"""``embed``: one vector per document from an encoder's last hidden states, for search and deduplication.

Pooling is that of ``sentence-transformers``: the mean of the window's token vectors ([CLS] and [SEP]
included, padding excluded) or the [CLS] token's vector, then, with ``normalize``, scaled to unit length.
Any encoder ``transformers``' ``AutoModel`` loads will do (BERT, DistilBERT, MiniLM...); a checkpoint with a
task head is read without its head. A document longer than one window is either truncated or cut into
consecutive windows whose vectors are averaged, each weighted by the tokens it holds, before normalising."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from distilbeam.transforms import SetupError
from distilbeam.transforms.batching import Tokenized
from distilbeam.transforms.tasks.base import Loaded, TaskHandler, TaskSettings


@dataclasses.dataclass(frozen=True)
class Settings(TaskSettings):
    kind = "embed"
    # mean: average of the token vectors; cls: the first ([CLS]) token's vector.
    pooling: Literal["mean", "cls"] = "mean"
    # Scale each vector to unit L2 length, so a dot product is the cosine similarity.
    normalize: bool = True
    # truncate: the first window only; chunk-mean: every window, vectors averaged by their token counts.
    long_text: Literal["truncate", "chunk-mean"] = "chunk-mean"


class Handler(TaskHandler):
    auto_class_name = "AutoModel"
    architecture_suffix = ""
    labelled = False

    @classmethod
    def check_model(cls, uri: str, config: dict[str, Any]) -> None:
        from transformers import CONFIG_MAPPING

        if config.get("model_type") not in CONFIG_MAPPING:
            raise SetupError(
                f"model {uri} has model_type {config.get('model_type')!r}, which transformers does not "
                "know; task kind embed needs an encoder AutoModel can load"
            )

    def resolve_model(self, tokenizer: Any, config: Mapping[str, Any]) -> None:
        from transformers import CONFIG_MAPPING

        model_config = CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
        self.dim = int(model_config.hidden_size)

    def stride(self) -> int | None:
        return None if self.settings.long_text == "truncate" else 0

    def model_output(self, output: Any, attention_mask: Any) -> Any:
        hidden = output.last_hidden_state.float()
        if self.settings.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[list[float]]:
        rows, owners = self.rows(items, model)
        vectors = np.stack(self.forward(rows, model))
        weights = np.asarray([len(r) for r in rows], dtype=np.float32)
        owners_arr = np.asarray(owners)
        out = []
        for i in range(len(items)):
            mine = owners_arr == i
            vector = np.average(vectors[mine], axis=0, weights=weights[mine]).astype(np.float32)
            if self.settings.normalize:
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            out.append(vector.tolist())
        return out

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.float32(), self.dim)
