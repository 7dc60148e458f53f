"""Transitivity of measured offsets: around every loop of three nodes the
offsets must sum to zero within their combined uncertainty. A path whose
delay differs by direction biases the offset measured across it by half the
difference, in both directions alike, so each pair still looks consistent;
only loops show it. A link found in failing loops and in no passing loop is
the asymmetric one (isolating it takes at least four nodes).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Link:
    """theta_ns = clock(b) − clock(a) as measured across the a–b path."""
    a: str
    b: str
    theta_ns: float
    uncertainty_ns: float


@dataclass(frozen=True)
class Loop:
    nodes: tuple[str, str, str]
    closure_ns: float      # θab + θbc + θca; 0 for consistent clocks
    bound_ns: float        # sum of the three uncertainties
    ok: bool


@dataclass(frozen=True)
class TransitivityReport:
    loops: tuple[Loop, ...]
    suspects: tuple[tuple[str, str], ...]   # links in failing loops only
    isolated: bool                          # True when the suspects are pinned down

    @property
    def failing(self) -> tuple[Loop, ...]:
        return tuple(l for l in self.loops if not l.ok)

    def summary(self) -> str:
        if not self.loops:
            return "transitivity: fewer than three measured nodes"
        if not self.failing:
            return f"transitivity: {len(self.loops)} loop(s) close within uncertainty"
        worst = max(self.failing, key=lambda l: abs(l.closure_ns) - l.bound_ns)
        sus = ", ".join(f"{a}-{b}" for a, b in self.suspects) or "undetermined"
        return (f"transitivity: {len(self.failing)}/{len(self.loops)} loop(s) fail "
                f"(worst {'-'.join(worst.nodes)}: {worst.closure_ns:.0f} ns > ±{worst.bound_ns:.0f} ns); "
                f"asymmetric path {'is' if self.isolated else 'may be'} {sus}")


def _theta(links: dict, a: str, b: str):
    if (a, b) in links:
        l = links[(a, b)]
        return l.theta_ns, l.uncertainty_ns
    if (b, a) in links:
        l = links[(b, a)]
        return -l.theta_ns, l.uncertainty_ns
    return None


def check(links: list[Link], margin: float = 1.0) -> TransitivityReport:
    """Check every triangle of nodes whose three links were measured. When a
    pair was measured both ways, the link given last wins."""
    by = {}
    for l in links:
        by.pop((l.b, l.a), None)
        by[(l.a, l.b)] = l
    nodes = sorted({n for l in links for n in (l.a, l.b)})
    loops = []
    for a, b, c in combinations(nodes, 3):
        legs = [_theta(by, a, b), _theta(by, b, c), _theta(by, c, a)]
        if any(x is None for x in legs):
            continue
        closure = sum(x[0] for x in legs)
        bound = sum(x[1] for x in legs) * margin
        loops.append(Loop((a, b, c), closure, bound, abs(closure) <= bound))
    key = lambda x, y: (min(x, y), max(x, y))
    in_fail, in_pass = {}, set()
    for lp in loops:
        a, b, c = lp.nodes
        for e in (key(a, b), key(b, c), key(c, a)):
            if lp.ok:
                in_pass.add(e)
            else:
                in_fail[e] = in_fail.get(e, 0) + 1
    suspects = sorted((e for e in in_fail if e not in in_pass), key=lambda e: (-in_fail[e], e))
    if suspects:
        top = in_fail[suspects[0]]
        suspects = [e for e in suspects if in_fail[e] == top]
    isolated = len(suspects) == 1
    return TransitivityReport(tuple(loops), tuple(suspects), isolated)
