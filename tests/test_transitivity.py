from skewd.transitivity import Link, check

TRUE = {"a": 0, "b": 5_000_000, "c": -2_000, "d": 40_000, "e": 0}


def links(nodes, bias=None, unc=2_000):
    bias = bias or {}
    out = []
    for i, x in enumerate(nodes):
        for y in nodes[i + 1:]:
            theta = TRUE[y] - TRUE[x] + bias.get((x, y), 0)
            out.append(Link(x, y, theta, unc))
    return out


def test_consistent_clocks_close_every_loop():
    r = check(links(["a", "b", "c", "d"]))
    assert len(r.loops) == 4 and not r.failing and r.suspects == ()
    assert "close within" in r.summary()


def test_one_asymmetric_link_among_four_is_found():
    # 60 µs more delay one way on c–d: the offset across it is biased by 30 µs
    r = check(links(["a", "b", "c", "d"], bias={("c", "d"): 30_000}))
    assert len(r.failing) == 2
    assert r.suspects == (("c", "d"),) and r.isolated
    assert "is c-d" in r.summary()


def test_among_five_nodes():
    r = check(links(["a", "b", "c", "d", "e"], bias={("a", "e"): -25_000}))
    assert r.suspects == (("a", "e"),) and r.isolated


def test_three_nodes_flag_the_loop_but_cannot_isolate():
    r = check(links(["a", "b", "c"], bias={("a", "b"): 30_000}))
    assert len(r.failing) == 1 and not r.isolated and len(r.suspects) == 3
    assert "may be" in r.summary()


def test_bias_within_uncertainty_is_not_flagged():
    r = check(links(["a", "b", "c", "d"], bias={("c", "d"): 3_000}, unc=2_000))
    assert not r.failing


def test_reversed_direction_links_are_used():
    ls = [Link("b", "a", -(TRUE["b"] - TRUE["a"]), 1000), Link("b", "c", TRUE["c"] - TRUE["b"], 1000),
          Link("a", "c", TRUE["c"] - TRUE["a"] + 50_000, 1000)]
    r = check(ls)
    assert len(r.failing) == 1


def test_fewer_than_three_nodes():
    assert check(links(["a", "b"])).summary().startswith("transitivity: fewer")
