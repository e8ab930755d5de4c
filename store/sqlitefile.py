"""Cheap checks of an SQLite file before SQLite opens it.

SQLite "opens" any file and only fails at the first query, with a bare driver error; a file cut
short (a partial copy, a full disk) may even read fine until a query reaches the missing pages.
Reading the 100-byte header lets the store refuse such files at open time with a named error.
"""

from __future__ import annotations

import struct
from pathlib import Path

from store.exceptions import LogCorrupted, NotADatabase, StoreUnavailable

SQLITE_HEADER = b"SQLite format 3\x00"
HEADER_SIZE = 100


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def check_sqlite_file(path: Path) -> None:
    """Raise NotADatabase or LogCorrupted unless ``path`` is absent, empty, or a whole SQLite file."""
    where = str(path)
    if path.is_dir():
        raise NotADatabase(path=where, detail="it is a directory")
    try:
        size = path.stat().st_size
        if size == 0:
            return  # SQLite treats an empty file as an empty database: the store creates its tables.
        with path.open("rb") as fh:
            header = fh.read(HEADER_SIZE)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreUnavailable(path=where, detail=f"cannot read it ({e.strerror})") from e
    if not header.startswith(SQLITE_HEADER[: len(header)]) or len(header) < len(SQLITE_HEADER):
        raise NotADatabase(path=where, detail="its first bytes are not an SQLite header")
    if len(header) < HEADER_SIZE:
        detail = f"it is truncated inside the SQLite header ({size} bytes)"
        raise LogCorrupted(path=where, seq=None, detail=detail)
    # A crash mid-checkpoint may leave the main file short of its header's page count; the WAL (or a
    # hot rollback journal) still holds those pages and SQLite repairs the file on open.
    if any(_has_content(path.with_name(path.name + tail)) for tail in ("-wal", "-journal")):
        return
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    if page_size < 512 or page_size & (page_size - 1):
        detail = f"its header names an impossible page size {page_size}"
        raise LogCorrupted(path=where, seq=None, detail=detail)
    # The header's page count is only authoritative when written by SQLite >= 3.7.0 (valid_for matches).
    if pages and valid_for == change_counter and size < pages * page_size:
        raise LogCorrupted(
            path=where,
            seq=None,
            detail=f"it is truncated: its header counts {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes) but the file holds {size}",
        )
