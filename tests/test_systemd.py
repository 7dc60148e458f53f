"""The systemd units verify, and the service's exposure stays low."""
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian package systemd)")


def _unit(tmp_path, with_dropin=False):
    skewd_bin = os.path.join(os.path.dirname(sys.executable), "skewd")
    text = open(os.path.join(ROOT, "systemd", "skewd.service")).read()
    unit = tmp_path / "skewd.service"
    unit.write_text(text.replace("/usr/local/bin/skewd", skewd_bin))
    if with_dropin:
        d = tmp_path / "skewd.service.d"
        d.mkdir()
        shutil.copy(os.path.join(ROOT, "systemd", "skewd-adjust.conf"), d / "adjust.conf")
    return str(unit)


@needs_analyze
def test_service_verifies(tmp_path):
    r = subprocess.run(["systemd-analyze", "verify", _unit(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "skewd.service" not in r.stderr, r.stderr   # no warnings about our unit


@needs_analyze
def test_service_exposure_is_low(tmp_path):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", _unit(tmp_path)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for skewd.service: ([\d.]+)", r.stdout)
    assert m, r.stdout[-500:] + r.stderr
    assert float(m.group(1)) <= 2.5


def test_units_ask_only_for_needed_capabilities():
    svc = open(os.path.join(ROOT, "systemd", "skewd.service")).read()
    caps = re.findall(r"^CapabilityBoundingSet=(.*)$", svc, re.M)
    assert caps == ["CAP_NET_ADMIN"]
    assert "CAP_SYS_TIME" not in svc.split("[Service]")[1].split("#")[0]
    assert re.search(r"^Type=notify$", svc, re.M) and re.search(r"^WatchdogSec=", svc, re.M)
    assert re.search(r"^ProtectSystem=strict$", svc, re.M)
    adj = open(os.path.join(ROOT, "systemd", "skewd-adjust.conf")).read()
    assert "CAP_SYS_TIME" in adj
