"""Plain text shards: each line is a document, its id derived from the shard and the line number. With
``long_documents: split`` a line too long to hold is streamed into parts rather than skipped."""

from __future__ import annotations

from distilbeam.transforms.read.base import LineReader
from distilbeam.transforms.read.documents import decode, derived_id, document, too_long
from distilbeam.transforms.schema import Document, Failure


class TextReader(LineReader):
    """A text line in, a document out."""

    streams_long_lines = True

    def parse(self, raw: bytes, source: str, offset: int) -> Document | Failure:
        text, warnings = decode(raw)
        doc = document(derived_id(source, offset), source, offset, text, warnings)
        return too_long(doc, self.settings, raw)
