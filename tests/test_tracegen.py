import numpy as np
import pytest

from skewd import tracegen as g
from skewd.errors import UsageError
from skewd.schema import SPAN_SCHEMA


def test_pipeline_shape_and_truth():
    clocks = {"b": g.NodeClock(offset_ns=5_000, drift_ppb=1000)}
    t, truth = g.pipeline(50, [("s", "a"), ("m", "b"), ("k", "c")], clocks=clocks)
    assert t.schema.remove_metadata().equals(SPAN_SCHEMA)
    assert t.num_rows == 50 * 8
    kinds = t.column("kind").to_pylist()
    assert kinds.count("producer") == 100 and kinds.count("consumer") == 100
    # injected ground truth is the node's offset at the span's start
    node = np.array(t.column("node").to_pylist())
    inj = t.column("injected_offset_ns").to_numpy()
    assert (inj[node == "a"] == 0).all()
    assert np.abs(inj[node == "b"] - 5_000).max() < 100
    assert truth.skew_ns("a", "b", truth.epoch_ns) == pytest.approx(5_000)
    # span ids are unique
    assert len(set(t.column("span_id").to_pylist())) == t.num_rows


def test_rpc_nesting_in_true_time():
    t, _ = g.rpc(20, [("a", "b", "B"), ("b", "c", "C")])
    d = t.to_pydict()
    rows = {s: i for i, s in enumerate(d["span_id"])}
    for i, p in enumerate(d["parent_id"]):
        if p is None:
            continue
        j = rows[p]
        assert d["start_ns"][j] <= d["start_ns"][i] and d["end_ns"][i] <= d["end_ns"][j]


def test_resolution_and_orders():
    clocks = {"a": g.NodeClock(resolution_ns=1000, name="jaeger_us")}
    for order in ("trace", "node", "shuffle", "position"):
        t, _ = g.pipeline(10, [("s", "a"), ("m", "b")], clocks=clocks, order=order)
        node = np.array(t.column("node").to_pylist())
        assert (t.column("start_ns").to_numpy()[node == "a"] % 1000 == 0).all()
    with pytest.raises(UsageError):
        g.pipeline(10, [("s", "a"), ("m", "b")], order="bogus")
    with pytest.raises(UsageError):
        g.pipeline(10, [("s", "a")])


def test_seeds_give_distinct_ids():
    a, _ = g.pipeline(10, [("s", "a"), ("m", "b")], seed=1)
    b, _ = g.pipeline(10, [("s", "a"), ("m", "b")], seed=2)
    assert not set(a.column("span_id").to_pylist()) & set(b.column("span_id").to_pylist())
