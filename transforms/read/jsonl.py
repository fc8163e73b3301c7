"""JSON Lines shards: each line is one JSON object, its text in ``input.text_field`` and its id, when
``input.id_field`` is set and present, in that field, and with ``input.text_pair_field`` a sentence pair's
second text in that field. A line that is not such an object is a dead-letter row naming what it is
instead."""

from __future__ import annotations

import json

from distilbeam.transforms.read.base import LineReader, cr_hint
from distilbeam.transforms.read.documents import decode, document, json_kind, record_id, too_long
from distilbeam.transforms.schema import SURROGATES, Document, Failure


class JsonlReader(LineReader):
    """A JSON line in, a document out."""

    # With long_documents: split, a JSON line is still parsed whole: one longer than this is dead-lettered.
    split_line_bytes = 256 << 20
    bom_on_every_line = True

    def parse(self, raw: bytes, source: str, offset: int) -> Document | Failure:
        settings = self.settings

        def fail(message: str, error: str | BaseException = "BadRecord", id: str | None = None) -> Failure:
            return Failure.of("parse", error, message, source=source, offset=offset, id=id, raw=raw)

        line, warnings = decode(raw)
        if not line.strip():
            return fail("blank line where a JSON object was expected")
        try:
            # strict=False: raw control characters inside strings (tabs, NULs) are taken as they are.
            record = json.loads(line, strict=False)
        except RecursionError as exc:
            return fail("not valid JSON: nested too deeply to parse", exc)
        except ValueError as exc:
            return fail(f"not valid JSON: {exc}{cr_hint(raw)}", exc)
        if not isinstance(record, dict):
            return fail(f"JSON line is {json_kind(record)}, expected an object")
        id_ = record_id(record.get(settings.id_field) if settings.id_field else None, source, offset)
        if not isinstance(id_, str):
            return fail(id_.message, "BadId")
        texts: dict[str, str] = {}
        for name, field in (("text", settings.text_field), ("text pair", settings.text_pair_field)):
            if field is None:
                continue
            text = record.get(field)
            if not isinstance(text, str):
                what = json_kind(text) if field in record else "missing"
                return fail(f"{name} field {field!r} is {what}, expected a string", id=id_)
            if SURROGATES.search(text):
                text = SURROGATES.sub("\ufffd", text)
                warnings += ("lone_surrogate",)
            texts[name] = text
        doc = document(id_, source, offset, texts["text"], warnings, texts.get("text pair"))
        return too_long(doc, settings, raw)
