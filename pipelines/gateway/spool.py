"""A durable, bounded, append-only on-disk queue of Kafka records (the gateway's usage spool).

Layout of the spool directory:

    seg-0000000000000001.log   append-only segments of framed records, rolled at `segment_bytes`
    cursor                     "<segment seq> <byte offset>": the next record to replay (atomically replaced)
    lock                       flock'd by the one process that owns the spool

Frame: magic 0xA5 | u32 payload length | u32 CRC-32 of payload | payload, with payload = u16 key length
(0xFFFF = null key) | key | value. Every `append` writes whole frames and fsyncs before returning. On open,
a torn or corrupt tail of the newest segment (a crash mid-write) is truncated; corruption anywhere else is
an error (never silently skipped). Replay reads from the cursor in append order; `commit` moves the cursor
and deletes segments that are fully replayed.

Bounded: `full` is true once the unreplayed bytes reach `max_bytes`; the gateway then refuses new requests
with 503 (it still appends the usage of requests already in flight, so the bound is soft by at most that).
Not thread-safe: the publisher calls it from one task at a time (through a worker thread).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

from core.files import private_dir

log = logging.getLogger("joulestream.gateway.spool")
MAGIC = 0xA5
_HEADER = struct.Struct("<BII")
_KEYLEN = struct.Struct("<H")
NULL_KEY = 0xFFFF

Record = tuple[bytes | None, bytes]


class SpoolError(RuntimeError):
    """A spool that cannot be used: locked by another process, a corrupt cursor or record."""


def _frame(key: bytes | None, value: bytes) -> bytes:
    if key is not None and len(key) >= NULL_KEY:
        raise SpoolError("key too long for the spool")
    payload = _KEYLEN.pack(NULL_KEY if key is None else len(key)) + (key or b"") + value
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(
        self, directory: str | Path, max_bytes: int = 1 << 30, segment_bytes: int = 16 << 20
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes, self.segment_bytes = max_bytes, segment_bytes
        private_dir(self.dir)  # usage events of every org: owner-only, like the rest of the home
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.dir} is in use by another process") from None
        self._writer = None
        self._reader = None
        self._reader_seq = -1
        self.depth = 0  # records not yet replayed
        self.pending_bytes = 0  # bytes not yet replayed
        self.appended = 0
        self.replayed = 0
        self._recover()

    # ------------------------------------------------------------------------------------------ state
    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("seg-*.log"))

    def _path(self, seq: int) -> Path:
        return self.dir / f"seg-{seq:016d}.log"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seq, off = (self.dir / "cursor").read_text().split()
            return int(seq), int(off)
        except FileNotFoundError:
            return 0, 0
        except ValueError as exc:
            raise SpoolError(f"corrupt spool cursor in {self.dir}") from exc

    def _write_cursor(self, seq: int, off: int) -> None:
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as f:
            f.write(f"{seq} {off}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.dir / "cursor")

    def _scan(self, path: Path, start: int, truncate_tail: bool) -> tuple[int, int]:
        """(records, end offset of the last whole frame) from `start`. A bad tail is truncated when allowed."""
        n = 0
        with open(path, "r+b" if truncate_tail else "rb") as f:
            f.seek(start)
            pos = start
            while True:
                head = f.read(_HEADER.size)
                if not head:
                    break
                ok = len(head) == _HEADER.size
                if ok:
                    magic, length, crc = _HEADER.unpack(head)
                    payload = f.read(length) if magic == MAGIC else b""
                    ok = magic == MAGIC and len(payload) == length and zlib.crc32(payload) == crc
                if not ok:
                    if not truncate_tail:
                        raise SpoolError(f"corrupt record in {path} at offset {pos}")
                    size = os.fstat(f.fileno()).st_size
                    log.error(
                        "spool %s: truncating %d bytes of torn/corrupt tail at offset %d",
                        path,
                        size - pos,
                        pos,
                    )
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                    break
                pos += _HEADER.size + length
                n += 1
        return n, pos

    def _recover(self) -> None:
        segs = self._segments()
        cseq, coff = self._read_cursor()
        self._cursor = (cseq, coff)
        for seq in segs:
            if seq < cseq:  # replayed but not yet deleted
                self._path(seq).unlink(missing_ok=True)
        segs = [s for s in segs if s >= cseq]
        for i, seq in enumerate(segs):
            last = i == len(segs) - 1
            start = coff if seq == cseq else 0
            n, end = self._scan(self._path(seq), start, truncate_tail=last)
            self.depth += n
            self.pending_bytes += end - start
        if not segs:
            seq = max(cseq, 1)
            self._cursor = (seq, 0)
            self._write_cursor(seq, 0)
            segs = [seq]
            self._path(seq).touch()
            _fsync_dir(self.dir)
        elif self._cursor[0] < segs[0]:
            self._cursor = (segs[0], 0)
        self._active = segs[-1]

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.max_bytes

    @property
    def empty(self) -> bool:
        return self.depth == 0

    def stats(self) -> dict[str, int | bool]:
        return {
            "events": self.depth,
            "bytes": self.pending_bytes,
            "max_bytes": self.max_bytes,
            "full": self.full,
            "segments": len(self._segments()),
            "appended": self.appended,
            "replayed": self.replayed,
        }

    # ------------------------------------------------------------------------------------------ write
    def append(self, records: list[Record]) -> None:
        """Append records durably (fsync) in order."""
        if not records:
            return
        data = b"".join(_frame(k, v) for k, v in records)
        if self._writer is None:
            self._writer = open(self._path(self._active), "ab")
        if self._writer.tell() > 0 and self._writer.tell() + len(data) > self.segment_bytes:
            self._writer.close()
            self._active += 1
            self._writer = open(self._path(self._active), "ab")
            _fsync_dir(self.dir)
        self._writer.write(data)
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self.depth += len(records)
        self.pending_bytes += len(data)
        self.appended += len(records)

    # ------------------------------------------------------------------------------------------ replay
    def read(self, max_records: int = 5000) -> tuple[list[Record], tuple[int, int]]:
        """Up to `max_records` from the cursor, and the position after them (pass it to `commit`)."""
        seq, off = self._cursor
        out: list[Record] = []
        while len(out) < max_records:
            if self._reader_seq != seq:
                if self._reader is not None:
                    self._reader.close()
                path = self._path(seq)
                if not path.exists():
                    break
                self._reader, self._reader_seq = open(path, "rb"), seq
            f = self._reader
            assert f is not None
            f.seek(off)
            while len(out) < max_records:
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    break
                magic, length, crc = _HEADER.unpack(head)
                payload = f.read(length)
                if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                    raise SpoolError(f"corrupt record in {self._path(seq)} at offset {off}")
                (klen,) = _KEYLEN.unpack_from(payload)
                if klen == NULL_KEY:
                    key, value = None, payload[_KEYLEN.size :]
                else:
                    key = payload[_KEYLEN.size : _KEYLEN.size + klen]
                    value = payload[_KEYLEN.size + klen :]
                out.append((key, value))
                off += _HEADER.size + length
            if len(out) >= max_records or seq >= self._active:
                break
            seq, off = seq + 1, 0  # end of a finished segment: on to the next
        return out, (seq, off)

    def commit(self, position: tuple[int, int], count: int) -> None:
        """Mark everything before `position` (`count` records) as replayed."""
        old_seq, old_off = self._cursor
        seq, off = position
        if (seq, off) == (old_seq, old_off):
            return
        self._write_cursor(seq, off)
        self._cursor = (seq, off)
        for s in range(old_seq, seq):
            if s == self._reader_seq and self._reader is not None:
                self._reader.close()
                self._reader, self._reader_seq = None, -1
            self._path(s).unlink(missing_ok=True)
        self.depth -= count
        self.replayed += count
        self.pending_bytes = self._pending_bytes_from_cursor()
        if self.depth == 0 and seq == self._active and off > self.segment_bytes // 2:
            self._roll_empty()

    def _pending_bytes_from_cursor(self) -> int:
        seq, off = self._cursor
        total = 0
        for s in range(seq, self._active + 1):
            try:
                total += self._path(s).stat().st_size
            except FileNotFoundError:
                continue
        return max(0, total - off)

    def _roll_empty(self) -> None:
        """Everything is replayed and the active segment is large: start a fresh one, drop the old."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        old = self._active
        self._active += 1
        self._path(self._active).touch()
        self._write_cursor(self._active, 0)
        self._cursor = (self._active, 0)
        _fsync_dir(self.dir)
        if self._reader is not None:
            self._reader.close()
            self._reader, self._reader_seq = None, -1
        self._path(old).unlink(missing_ok=True)
        self.pending_bytes = 0

    def close(self) -> None:
        for f in (self._writer, self._reader):
            if f is not None:
                f.close()
        self._writer = self._reader = None
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
