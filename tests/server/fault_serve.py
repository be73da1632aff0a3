"""`dllm serve` with an engine fault injected once the server has started (after the warm-up step):
the tests' stand-in for a GPU that breaks, a loop that dies, or a step that hangs.

    python tests/server/fault_serve.py <serve flags>     with DLLM_TEST_FAULT=fail | poison | die | slow:S

fail: every engine step raises (a broken device); poison: steps that hold a request with max_tokens 7
raise (a bug one kind of request hits); die: the engine thread itself crashes when the next request
comes; slow:S: every step first sleeps S seconds (a forward that outlasts the drain deadline).
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import async_engine  # noqa: E402
from engine.cli import main  # noqa: E402


def inject(engine: async_engine.AsyncEngine, fault: str) -> None:
    step = engine.engine.step
    if fault == "fail":

        def failing_step():
            raise RuntimeError("injected step failure")

        engine.engine.step = failing_step
    elif fault == "poison":

        def poisoned_step():
            sched = engine.engine.scheduler
            if any(r.params.max_tokens == 7 for r in [*sched.running, *sched.waiting]):
                raise RuntimeError("injected failure of max_tokens=7 requests")
            return step()

        engine.engine.step = poisoned_step
    elif fault == "die":
        drain = engine._drain_inbox

        def crash():  # the loop calls it outside the step's error handling
            if not engine._inbox.empty():
                raise RuntimeError("injected engine loop crash")
            drain()

        engine._drain_inbox = crash
    elif fault.startswith("slow:"):
        seconds = float(fault.removeprefix("slow:"))

        def slow_step():
            time.sleep(seconds)
            return step()

        engine.engine.step = slow_step
    else:
        raise ValueError(f"unknown fault {fault!r}")


_start = async_engine.AsyncEngine.start


def start_with_fault(self) -> None:
    inject(self, os.environ["DLLM_TEST_FAULT"])
    _start(self)


async_engine.AsyncEngine.start = start_with_fault
sys.exit(main(["serve", *sys.argv[1:]]))
