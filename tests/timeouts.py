"""A hard per-test time limit (SIGALRM) for tests that drive real clusters and subprocesses."""
import functools
import signal


def hard_timeout(seconds: int):
    """Fail the test (TimeoutError in the main thread) when it runs longer than `seconds`."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            def on_alarm(signum, frame):
                raise TimeoutError(f"{fn.__name__} exceeded its hard timeout of {seconds} s")

            old = signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(seconds)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)

        return wrapper

    return deco
