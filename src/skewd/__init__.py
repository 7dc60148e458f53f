"""skewd: clock measurement, skew injection and causality checking for
distributed inference pipelines."""

_LAZY = {"Tracer": "skewd.tracer", "SpanContext": "skewd.tracer"}


def __getattr__(name):
    # heavy modules (pyarrow) load only when their names are used
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'skewd' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(mod), name)
