"""Estimate reports between daemons, for the transitivity check: every few
seconds each daemon sends its peers the offsets it measures to its own peers,
so every node can close loops of three. One-way UDP datagrams on the probe
socket, sent only to configured peers and accepted only from them.

Byte layout (network byte order):

    off size field
      0    4 magic        "SKWG"
      4    1 version      1
      5    1 count        number of entries (≤ 32)
      6    2 reserved     0
      8    4 key_id       0 when unauthenticated
     12    8 time_ns      sender's clock when the report was made
     20   64 node         sender's node name, NUL-padded
     84  ... entries      count × 96 bytes:
                            64 peer name, NUL-padded
                             8 offset_ns   (float64: peer's clock minus sender's, at time_ns)
                             8 drift_ppb   (float64: rate of change of that offset)
                             8 precision_ns (float64: statistical half-width)
                             8 age_ns      (int64: time since the estimate's last sample)
    end   32 mac          HMAC-SHA256 over everything before it (zeros when unauthenticated)

The daemon tells reports from probes by the magic before anything else.
"""
from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from skewd.errors import PeerError

MAGIC = b"SKWG"
VERSION = 1
MAX_ENTRIES = 32
_HEAD = struct.Struct("!4sBBHIq64s")
_ENTRY = struct.Struct("!64sdddq")
MAC_LEN = 32


@dataclass(frozen=True)
class Entry:
    peer: str
    offset_ns: float
    drift_ppb: float
    precision_ns: float
    age_ns: int

    def offset_after(self, elapsed_ns: float) -> float:
        """The offset elapsed_ns after the report was made, by its drift."""
        return self.offset_ns + self.drift_ppb * elapsed_ns / 1e9


@dataclass(frozen=True)
class Report:
    node: str
    time_ns: int
    entries: tuple[Entry, ...]
    key_id: int = 0


def _name(b: bytes) -> str:
    raw = b.rstrip(b"\0")
    if b"\0" in raw:
        raise PeerError("name field has bytes after its NUL padding")
    return raw.decode("utf-8")


def encode(r: Report, key=None) -> bytes:
    if len(r.entries) > MAX_ENTRIES:
        raise ValueError(f"at most {MAX_ENTRIES} entries per report")
    body = _HEAD.pack(MAGIC, VERSION, len(r.entries), 0, key.id if key else 0, r.time_ns,
                      r.node.encode()[:64])
    body += b"".join(_ENTRY.pack(e.peer.encode()[:64], e.offset_ns, e.drift_ppb, e.precision_ns,
                                 e.age_ns)
                     for e in r.entries)
    return body + (key.mac(body) if key else bytes(MAC_LEN))


def is_report(data: bytes) -> bool:
    return data[:4] == MAGIC


def decode(data: bytes, keys=None, require_auth: bool = False) -> Report:
    """Parse and authenticate a report; PeerError for anything wrong."""
    if len(data) < _HEAD.size + MAC_LEN:
        raise PeerError("report too short")
    magic, version, count, _, key_id, t, node = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise PeerError("not a version-1 report")
    if not 0 <= count <= MAX_ENTRIES or len(data) != _HEAD.size + count * _ENTRY.size + MAC_LEN:
        raise PeerError("report length does not match its entry count")
    body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if key_id:
        key = (keys or {}).get(key_id)
        if key is None or not hmac.compare_digest(key.mac(body), mac):
            raise PeerError("report fails authentication")
    elif require_auth:
        raise PeerError("unauthenticated report")
    entries = []
    for i in range(count):
        peer, off, drift, prec, age = _ENTRY.unpack_from(data, _HEAD.size + i * _ENTRY.size)
        if not (abs(off) < 1e15 and abs(drift) < 1e9 and 0 <= prec < 1e15 and age >= 0):
            raise PeerError("report entry out of range")
        entries.append(Entry(_name(peer), off, drift, prec, age))
    return Report(_name(node), t, tuple(entries), key_id)
