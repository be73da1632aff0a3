"""Engine ValueErrors map to the OpenAI error the server promises (no server process needed)."""

from server.errors import from_value_error


def test_batch_budget_error_is_a_context_length_error_on_the_prompt():
    msg = (
        "the request needs 90 positions per step (2 row(s) of prompt + max_tokens), "
        "more than max_num_batched_tokens (64)"
    )
    err = from_value_error(ValueError(msg), "messages")
    assert (err.status, err.param, err.code) == (400, "messages", "context_length_exceeded")
    assert err.message == msg
