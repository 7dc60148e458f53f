"""Benchmarks behind `skewd bench ...` and bench/*.py: each module has
run(...) -> dict and format(result) -> str."""
import json
import os
import statistics
import timeit


def per_call_ns(fn, number: int, repeat: int) -> list[float]:
    """ns per call of a no-argument callable, one figure per repeat."""
    return [t / number * 1e9 for t in timeit.repeat(fn, number=number, repeat=repeat)]


def median(xs) -> float:
    return float(statistics.median(xs))


def quantile(xs, q: float) -> float:
    """The q-quantile of xs, interpolated between the nearest two."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    i = int(k)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (xs[i + 1] - xs[i]) * (k - i)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def finish(module, res: dict, json_path: str) -> int:
    """What every bench/*.py script ends with: print the module's table, write
    the result as JSON, and exit 0 only when every budget was met."""
    print(module.format(res))
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print(f"wrote {json_path}")
    return 0 if res.get("all_ok", True) else 1
