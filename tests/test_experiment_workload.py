"""The pipeline's computation and the sink's independent reference."""
import time

import numpy as np
import pytest

from skewd.experiment import workload as w


@pytest.fixture(scope="module")
def weights():
    return w.make_weights(1)


def _pipeline(weights, seed, req):
    return w.postprocess(w.model(weights, w.preprocess(w.make_input(seed, req))))


def test_weights_and_inputs_are_fixed_by_the_seed(weights):
    again = w.make_weights(1)
    for (a1, a2), (b1, b2) in zip(weights.blocks, again.blocks):
        assert np.array_equal(a1, b1) and np.array_equal(a2, b2)
    assert not np.array_equal(w.make_weights(2).classifier, weights.classifier)
    assert np.array_equal(w.make_input(1, 7), w.make_input(1, 7))
    assert not np.array_equal(w.make_input(1, 7), w.make_input(1, 8))


def test_reference_accepts_what_the_stages_compute(weights):
    ref = w.Reference(1)
    ids = list(range(40))
    outs = [_pipeline(weights, 1, i) for i in ids]
    ok = ref.check(ids, np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs]))
    assert ok.all()


def test_reference_rejects_wrong_outputs(weights):
    ref = w.Reference(1)
    top, probs = _pipeline(weights, 1, 3)
    swapped = top.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    off = probs.copy()
    off[2] += 0.01
    dup = top.copy()
    dup[1] = dup[0]
    bad = top.copy()
    bad[4] = w.CLASSES + 3
    tops = np.stack([top, swapped, top, dup, bad])
    ps = np.stack([probs, probs, off, probs, probs])
    assert ref.check([3] * 5, tops, ps).tolist() == [True, False, False, False, False]
    # the right output for another request is wrong for this one
    t4, p4 = _pipeline(weights, 1, 4)
    assert not ref.check([3], t4[None], p4[None])[0]


def test_payload_round_trip():
    x = w.make_input(1, 5)
    req, t, body = w.unpack_head(w.pack(5, 123456789, x))
    assert (req, t) == (5, 123456789)
    assert np.array_equal(w.as_array(body, np.float32, x.shape), x)
    top = np.arange(w.TOP_K, dtype=np.int32)
    probs = np.linspace(0.5, 0.1, w.TOP_K).astype(np.float32)
    _, _, body = w.unpack_head(w.pack(1, 2, top, probs))
    t2, p2 = w.unpack_output(body)
    assert np.array_equal(t2, top) and np.array_equal(p2, probs)
    with pytest.raises(ValueError):
        w.unpack_head(b"short")


def test_model_takes_a_few_hundred_microseconds(weights):
    x = w.preprocess(w.make_input(1, 0))
    for _ in range(20):
        w.model(weights, x)
    times = []
    for _ in range(200):
        t = time.perf_counter_ns()
        w.model(weights, x)
        times.append(time.perf_counter_ns() - t)
    med = float(np.median(times))
    # real work, not a sleep: tens of µs at the very least, and not tens of ms
    assert 50_000 < med < 5_000_000, med
