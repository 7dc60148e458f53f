import pytest
from hypothesis import given, settings, strategies as st

from skewd import config
from skewd.errors import ConfigError

GOOD = """\
node = "gpu-a"
listen = "0.0.0.0:3190"
reference = "gpu-b"
probe_interval = "100ms"

[[peers]]
name = "gpu-b"
address = "10.0.0.2:3190"
key_id = 7

[[peers]]
name = "gpu-c"
address = "[fd00::3]:4000"

[inject]
schedule = "step:offset=5ms"

[log]
dir = "/tmp/x"
rotate_size = "16MiB"
rotate_age = "10min"

[metrics]
address = "127.0.0.1:9470"
"""


def test_good_config_parses():
    c = config.loads(GOOD, "skewd.toml")
    assert c.node == "gpu-a" and c.listen_port == 3190
    assert [p.name for p in c.peers] == ["gpu-b", "gpu-c"]
    assert c.peers[0].key_id == 7 and c.peers[1].host == "fd00::3" and c.peers[1].port == 4000
    assert c.reference == "gpu-b" and c.probe_interval_ns == 100_000_000
    assert c.log_rotate_bytes == 16 * 1024**2 and c.log_rotate_age_ns == 600 * 10**9
    assert (c.metrics_host, c.metrics_port) == ("127.0.0.1", 9470)
    assert c.inject_schedule == "step:offset=5ms"


def test_defaults():
    c = config.loads('node = "a"\n')
    assert c.peers == () and c.metrics_port == 9469 and c.listen_port == 3190
    assert c.presend_ns == 200_000


def test_presend():
    def with_presend(value):
        return GOOD.replace('probe_interval = "100ms"',
                            f'probe_interval = "100ms"\npresend = "{value}"')
    assert config.loads(with_presend("50us")).presend_ns == 50_000
    assert config.loads(with_presend("0")).presend_ns == 0
    with pytest.raises(ConfigError, match=r"line 5: presend must be under half of probe_interval"):
        config.loads(with_presend("60ms"), "skewd.toml")
    with pytest.raises(ConfigError, match=r"line 5: presend must not be negative"):
        config.loads(with_presend("-1us"), "skewd.toml")


@pytest.mark.parametrize("change,msg", [
    (('address = "10.0.0.2:3190"', 'address = "10.0.0.x:3190"'),
     r'line 8: peers\[0\].address .*10.0.0.x:3190.* is not an IP address'),
    (('probe_interval = "100ms"', 'probe_interval = "100"'), r"line 4: probe_interval: .*no unit"),
    (('probe_interval = "100ms"', 'probe_interval = "10us"'), r"line 4: probe_interval must be at least 1ms"),
    (('reference = "gpu-b"', 'reference = "gpu-z"'), r"line 3: reference 'gpu-z' is not one of the peers"),
    (('key_id = 7', 'key_id = "seven"'), r"line 9: peers\[0\].key_id must be an integer"),
    (('name = "gpu-c"', 'name = "gpu-b"'), r"line 12: peers\[1\].name 'gpu-b' appears twice"),
    (('name = "gpu-c"', 'name = "gpu-a"'), r"peers\[1\].name 'gpu-a' is this node itself"),
    (('node = "gpu-a"', 'node = "../a"'), r"line 1: node: .*not a safe file name"),
    (('rotate_size = "16MiB"', 'rotate_size = "big"'), r"line 20: log.rotate_size 'big' is not a size"),
    (('schedule = "step:offset=5ms"', 'schedule = "wobble"'), r"line 16: inject.schedule: .*unknown schedule kind"),
    (('address = "127.0.0.1:9470"', 'address = "127.0.0.1:99999"'), r"line 24: .*port '99999'"),
    (('listen = "0.0.0.0:3190"', 'lisen = "0.0.0.0:3190"'), r"line 2: unknown key 'lisen'"),
    (('key_id = 7', 'key_id = 7\ncolour = 1'), r"line 10: peers\[0\]: unknown key 'colour'"),
])
def test_mistakes_name_key_and_line(change, msg):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ConfigError, match=msg):
        config.loads(text, "skewd.toml")


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.loads('node = "a\n')
    with pytest.raises(ConfigError, match="missing key 'node'"):
        config.loads('listen = "1.2.3.4"\n')
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"))
    p = tmp_path / "c.toml"
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(str(p))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_is_a_config_error_never_a_crash(text):
    try:
        config.loads(text)
    except ConfigError:
        pass


def test_render_is_what_loads_reads():
    from skewd.config import render
    text = render({"node": "n-1", "listen": "127.0.0.1:4000", "probe_interval": "250ms",
                   "control_socket": '/tmp/a "quoted" \\ dir/c.sock', "presend": "0"},
                  [("p1", "127.0.0.1:4001"), ("p2", "[::1]:4002")],
                  {"log": {"dir": "/tmp/logs", "flush": "300ms"}, "metrics": {"enabled": False}},
                  comment="made by a test")
    cfg = config.loads(text)
    assert text.startswith("# made by a test\n")
    assert cfg.node == "n-1" and cfg.listen_port == 4000 and cfg.probe_interval_ns == 250_000_000
    assert cfg.control_socket == '/tmp/a "quoted" \\ dir/c.sock' and cfg.presend_ns == 0
    assert [(p.name, p.address) for p in cfg.peers] == [("p1", ("127.0.0.1", 4001)),
                                                         ("p2", ("::1", 4002))]
    assert cfg.log_dir == "/tmp/logs" and cfg.log_flush_ns == 300_000_000
    assert cfg.metrics_port is None
