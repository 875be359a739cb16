"""eventsourcing's JSON for stored events, the same bytes, written faster for flat states."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Transcoding


class FlatJSONTranscoder(JSONTranscoder):
    """Writes a flat event state field by field, calling back into Python for nothing.

    The library's encoder calls a Python hook for every Decimal and datetime, and an
    order's event has three or four: encoding was a sixth of ingestion's time. Here the
    common values (str, int, None, Decimal, datetime) are written directly and anything
    else goes through the library's encoder, so the bytes are the library's own, which
    `tests/unit/test_transcoder.py` holds it to. Decoding is the library's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._keys: dict[str, str] = {}
        self._wrapped: dict[type, str] = {}

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        # Only the library's own transcodings are written directly: they are str() and
        # isoformat(), neither of which ever needs escaping in JSON.
        if type(transcoding) in (DecimalAsStr, DatetimeAsISO):
            self._wrapped[transcoding.type] = f'{{"_type_":"{transcoding.name}","_data_":"'
        else:
            self._wrapped.pop(transcoding.type, None)

    def encode(self, obj: Any) -> bytes:
        if type(obj) is not dict:
            return super().encode(obj)
        keys, wrapped = self._keys, self._wrapped
        parts = []
        for name, value in obj.items():
            key = keys.get(name)
            if key is None:
                if type(name) is not str:
                    return super().encode(obj)
                key = keys[name] = encode_basestring(name) + ":"
            kind = type(value)
            if kind is str:
                parts.append(key + encode_basestring(value))
            elif kind is int:
                parts.append(key + int.__repr__(value))
            elif value is None:
                parts.append(key + "null")
            elif kind is Decimal and kind in wrapped:
                parts.append(key + wrapped[kind] + str(value) + '"}')
            elif kind is datetime and kind in wrapped:
                parts.append(key + wrapped[kind] + value.isoformat() + '"}')
            else:
                parts.append(key + self.encoder.encode(value))
        return ("{" + ",".join(parts) + "}").encode()
