import json
import subprocess
import sys

import pytest

from skewd import cli
from skewd.skewclock import SkewedClock


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("clocks", "inject", "bench"):
        assert name in out
    with pytest.raises(SystemExit):
        cli.main(["inject", "--help"])
    out = capsys.readouterr().out
    assert "sine:amplitude" in out and "--clear" in out


def test_clocks_table_and_json(capsys):
    rc, out, _ = run(capsys, "clocks")
    assert rc == 0
    for name in ("realtime", "monotonic_raw", "tai", "boottime", "TSC", "PHC"):
        assert name in out
    rc, out, _ = run(capsys, "clocks", "--json")
    data = json.loads(out)
    assert rc == 0 and {c["name"] for c in data["clocks"]} >= {"realtime", "tai"}
    assert all(c["read_cost_ns"] > 0 for c in data["clocks"])


def test_inject_offset_show_clear(capsys):
    rc, out, _ = run(capsys, "inject", "--node", "model", "--offset", "5ms", "--drift", "20ppm")
    assert rc == 0 and "model" in out
    off = SkewedClock("model").offset_ns()
    assert 5_000_000 <= off < 5_100_000
    rc, out, _ = run(capsys, "inject", "--node", "model", "--show", "--json")
    st = json.loads(out)
    assert st["state"]["injected"] and st["state"]["cur"]["drift_ppb"] == 20_000
    rc, out, _ = run(capsys, "inject", "--node", "model", "--show")
    assert "injected offset now: 5.0" in out
    rc, out, _ = run(capsys, "inject", "--node", "model", "--clear")
    assert rc == 0 and SkewedClock("model").offset_ns() == 0


def test_inject_schedule_with_follow_for_a_while(capsys):
    rc, out, _ = run(capsys, "inject", "--node", "w", "--schedule",
                     "walk:sigma=100us,step=10ms,seed=1", "--follow", "--duration", "300ms")
    assert rc == 0
    rc, out, _ = run(capsys, "inject", "--node", "w", "--show", "--json")
    assert json.loads(out)["state"]["generation"] >= 10


@pytest.mark.parametrize("argv,msg", [
    (["inject", "--node", "../x", "--offset", "5ms"], "not a safe file name"),
    (["inject", "--node", "m", "--offset", "5"], "no unit"),
    (["inject", "--node", "m", "--offset", "5ms", "--drift", "20"], "ppm"),
    (["inject", "--node", "m", "--schedule", "sine:amplitude=1ms,period=1s"], "--follow"),
    (["inject", "--node", "m", "--clear", "--drift", "1ppm"], "--drift goes with --offset"),
])
def test_bad_input_is_a_clear_error_and_no_page_written(capsys, argv, msg, state_dir):
    import os
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and msg in err
    assert not any(f.endswith(".page") and f != "m.page" for f in os.listdir(state_dir)) or \
        SkewedClock("m").offset_ns() == 0


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "skewd.cli", "inject", "--node", "x", "--offset", "1zz"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown unit 'zz'" in r.stderr


def test_bench_clocks_quick(capsys, tmp_path):
    out_json = tmp_path / "b.json"
    rc, out, _ = run(capsys, "bench", "clocks", "--quick", "--json", str(out_json))
    assert "time.time_ns()" in out and "TSC" in out
    res = json.loads(out_json.read_text())
    names = [r["name"] for r in res["results"]]
    assert any("skewed-clock" in n for n in names)
    assert all(r["ns"] > 0 for r in res["results"])
