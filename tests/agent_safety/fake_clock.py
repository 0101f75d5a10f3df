"""A clock for retry tests: time moves only when `sleep` is called (or a test moves `now`)."""


class FakeClock:
    """`monotonic()` reads `now`; `sleep(s)` records s in `sleeps` and adds it to `now`."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now
