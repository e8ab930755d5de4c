"""The bytes the hash chain is made of: canonical JSON and the SHA-256 link of one event to the last."""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring
from typing import Any

GENESIS_HASH = "0" * 64

# Built once: json.dumps with keyword arguments builds a new encoder on every call.
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
#: A str as a JSON string literal with non-ASCII kept, exactly as canonical_json writes it.
json_str = encode_basestring


def canonical_json(payload: Any) -> str:
    return _canonical(payload)


def chain_hash(
    prev_hash: str, seq: int, stream: str, version: int, type_: str, type_version: int, payload: str, at: str
) -> str:
    """The hash of one event: covers its position (seq) so deleting or reordering rows breaks the chain."""
    # Exactly canonical_json([seq, stream, version, type_, type_version, payload, at]), built directly.
    s, t, p, a = json_str(stream), json_str(type_), json_str(payload), json_str(at)
    body = f"[{seq},{s},{version},{t},{type_version},{p},{a}]"
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def genesis_hash(scope: str) -> str:
    """The ``prev`` of a scope's first event: the all-zero hash for ``""`` (every v1 log), else a
    digest of the scope's name, so each chain is bound to its scope without hashing it per event."""
    if not scope:
        return GENESIS_HASH
    return hashlib.sha256(f"batchd.scope\n{scope}".encode()).hexdigest()
