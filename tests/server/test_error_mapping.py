"""Engine ValueErrors map to the OpenAI error the server promises (no server process needed)."""

import pytest

from engine.kv_cache import PageAllocator
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler
from server.errors import from_value_error


def test_batch_budget_error_is_a_context_length_error_on_the_prompt():
    msg = (
        "the request needs 90 positions per step (2 row(s) of prompt + max_tokens), "
        "more than max_num_batched_tokens (64)"
    )
    err = from_value_error(ValueError(msg), "messages")
    assert (err.status, err.param, err.code) == (400, "messages", "context_length_exceeded")
    assert err.message == msg


@pytest.mark.parametrize("num_pages", [0, 2])
def test_unservable_cache_is_an_error_on_cache(num_pages):
    """The engine's own refusals (no K/V pool; more pages than the pool has) name `cache`."""
    scheduler = Scheduler(4, 4096, (0,), kv_pages=PageAllocator(num_pages))
    params = SamplingParams(max_tokens=64, cache="dual").resolve()
    with pytest.raises(ValueError) as exc:
        scheduler.check_fits(10, params)
    err = from_value_error(exc.value, "messages")
    assert (err.status, err.param, err.code) == (400, "cache", "invalid_value")
    assert err.message == str(exc.value)
    assert ("needs a K/V cache pool" if num_pages == 0 else "K/V cache pages") in err.message
