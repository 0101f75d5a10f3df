"""common.device_memory: the device's allocation limit, or None where the platform reports none."""

import jax

from common.device_memory import device_memory_limit


class _Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats


def test_the_limit_or_none(monkeypatch):
    for stats, expected in [({"bytes_limit": 80 * 2**30, "bytes_in_use": 1}, 80 * 2**30), ({"bytes_in_use": 1}, None),
                            (None, None), ({"bytes_limit": 0}, None), (NotImplementedError("no stats"), None)]:
        monkeypatch.setattr(jax, "local_devices", lambda stats=stats: [_Device(stats)])
        assert device_memory_limit() == expected
    monkeypatch.undo()
    if jax.default_backend() == "cpu":
        assert device_memory_limit() is None
