"""The inference the pipeline does: inputs made from a request id, a fixed
seeded model, and a reference the sink computes independently to check every
output.

Stages work in float32 one step per process (preprocess: per-token
normalisation; model: two residual MLP blocks, mean pooling and a classifier,
a few hundred µs per request; postprocess: softmax and top-k). The reference
does the whole chain at once in float64 from the request id alone.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

TOKENS = 16
WIDTH = 256
HIDDEN = 768
BLOCKS = 2
CLASSES = 100
TOP_K = 5
#: |pipeline probability − reference probability| allowed (float32 vs float64)
TOLERANCE = 1e-4

#: request id, source send time on the unskewed clock (ns), then the array bytes
_HEAD = struct.Struct("<Qq")


@dataclass(frozen=True)
class Weights:
    blocks: tuple[tuple[np.ndarray, np.ndarray], ...]
    classifier: np.ndarray

    def astype(self, dtype) -> "Weights":
        return Weights(tuple((a.astype(dtype), b.astype(dtype)) for a, b in self.blocks),
                       self.classifier.astype(dtype))


def make_weights(seed: int) -> Weights:
    """The model's fixed weights (float32), the same in every process."""
    rng = np.random.default_rng([seed, 0x5EED])
    blocks = tuple(
        ((rng.standard_normal((WIDTH, HIDDEN)) / np.sqrt(WIDTH)).astype(np.float32),
         (rng.standard_normal((HIDDEN, WIDTH)) / np.sqrt(HIDDEN) * 0.5).astype(np.float32))
        for _ in range(BLOCKS))
    classifier = (rng.standard_normal((WIDTH, CLASSES)) / np.sqrt(WIDTH) * 4).astype(np.float32)
    return Weights(blocks, classifier)


def make_input(seed: int, req_id: int) -> np.ndarray:
    """Request `req_id`'s input: TOKENS×WIDTH float32, from (seed, id) alone."""
    rng = np.random.default_rng([seed, 1, req_id])
    return (rng.standard_normal((TOKENS, WIDTH)) * 3 + 1).astype(np.float32)


# --- the stages' steps (float32) --------------------------------------------

def preprocess(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True) + np.float32(1e-5)
    return ((x - mu) / sd).astype(np.float32)


def model(w: Weights, x: np.ndarray) -> np.ndarray:
    h = x
    for w1, w2 in w.blocks:
        h = h + np.maximum(h @ w1, 0) @ w2
    return h.mean(axis=0) @ w.classifier


def postprocess(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.exp(logits - logits.max())
    p = z / z.sum()
    top = np.argsort(-p, kind="stable")[:TOP_K].astype(np.int32)
    return top, p[top].astype(np.float32)


# --- the sink's independent reference (the whole chain, batched) -----------

class Reference:
    """Recomputes outputs from request ids alone, many requests at once (one
    large matrix product per layer instead of the stages' per-request ones)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.w = make_weights(seed)

    def probabilities(self, req_ids) -> np.ndarray:
        """len(req_ids) × CLASSES reference probabilities."""
        ids = list(req_ids)
        x = np.stack([make_input(self.seed, i) for i in ids]).astype(np.float64)
        x = (x - x.mean(axis=2, keepdims=True)) / (x.std(axis=2, keepdims=True) + 1e-5)
        x = x.astype(np.float32).reshape(len(ids) * TOKENS, WIDTH)
        for w1, w2 in self.w.blocks:
            x = x + np.maximum(x @ w1, 0) @ w2
        logits = x.reshape(len(ids), TOKENS, WIDTH).mean(axis=1) @ self.w.classifier
        logits = logits.astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def check(self, req_ids, tops: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """One bool per request: (top, probs) is the reference's top-k, i.e.
        each class's probability matches the reference's and the k-th one is
        the k-th largest (ties within TOLERANCE may come in either order)."""
        ids = list(req_ids)
        if not ids:
            return np.zeros(0, dtype=bool)
        tops = np.asarray(tops).reshape(len(ids), TOP_K)
        probs = np.asarray(probs, dtype=np.float64).reshape(len(ids), TOP_K)
        ref = self.probabilities(ids)
        ranked = -np.sort(-ref, axis=1)[:, :TOP_K]
        valid = np.all((tops >= 0) & (tops < CLASSES), axis=1)
        valid &= np.array([len(set(t.tolist())) == TOP_K for t in tops])
        safe = np.where(valid[:, None], tops, 0)
        mine = np.take_along_axis(ref, safe, axis=1)
        ok = np.all(np.abs(mine - probs) <= TOLERANCE, axis=1)
        ok &= np.all(np.abs(ranked - probs) <= TOLERANCE, axis=1)
        return ok & valid


# --- payloads ---------------------------------------------------------------

def pack(req_id: int, t_source_ns: int, *arrays: np.ndarray) -> bytes:
    return _HEAD.pack(req_id, t_source_ns) + b"".join(np.ascontiguousarray(a).tobytes()
                                                        for a in arrays)


def unpack_head(payload: bytes) -> tuple[int, int, memoryview]:
    if len(payload) < _HEAD.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    req_id, t = _HEAD.unpack_from(payload)
    return req_id, t, memoryview(payload)[_HEAD.size:]


def as_array(body: memoryview, dtype, shape) -> np.ndarray:
    a = np.frombuffer(body, dtype=dtype, count=int(np.prod(shape)))
    return a.reshape(shape)


def unpack_output(body: memoryview) -> tuple[np.ndarray, np.ndarray]:
    top = np.frombuffer(body, dtype=np.int32, count=TOP_K)
    probs = np.frombuffer(body, dtype=np.float32, count=TOP_K, offset=4 * TOP_K)
    return top, probs
