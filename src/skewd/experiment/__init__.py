"""skewd experiment: a multi-stage inference pipeline across nodes, with skew
injected at one stage, measured for when its traces stop telling the truth."""

#: what `skewd experiment` sweeps when no --skews is given. This package's
#: top is kept light (no numpy, no pyarrow): every command's --help and the
#: daemon's start import it through the CLI.
DEFAULT_SKEWS = "0,10us,30us,100us,300us,1ms,3ms,5ms"


def transport_names() -> list[str]:
    """Transports this installation has (modules in skewd.experiment.transports)."""
    import pkgutil

    from skewd.experiment import transports
    return sorted(m.name for m in pkgutil.iter_modules(transports.__path__)
                  if m.name != "base" and not m.name.startswith("_"))
