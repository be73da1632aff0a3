"""The runner-owned table of request settings: slots written once, reused, gathered in row order."""

import torch

from engine.request import Request
from engine.request_table import RequestTable
from engine.sampling_params import SamplingParams
from engine.unmasking import MODES

MASK = 99


def make(rid, seed=0, **kw):
    req = Request(rid, [1, 2, 3], SamplingParams(max_tokens=4, **kw).resolve(), MASK)
    req.seed = seed
    return req


def test_settings_follow_the_row_order_and_are_kept_while_the_requests_stay():
    table = RequestTable(torch.device("cpu"))
    a = make("a", temperature=0.5, top_k=3, seed=1)
    b = make("b", threshold=0.9, logits_eos_inf=True)
    first = table.settings([a, b])
    assert first.temperature.tolist() == [0.5, 0.0]
    assert first.mode.tolist() == [MODES.index("schedule"), MODES.index("threshold")]
    assert first.eos_ban.tolist() == [False, True]
    assert first.top_k.tolist() == [3, 0] and first.max_top_k == 3
    assert first.modes == {"schedule", "threshold"}
    assert {"sampled", "top_k", "filters", "logits_eos_inf"} <= first.used
    assert table.settings([a, b]) is first  # same requests, same order: nothing rebuilt
    swapped = table.settings([b, a])
    assert swapped.temperature.tolist() == [0.0, 0.5]
    assert swapped.seed_keys == first.seed_keys[::-1]


def test_slots_of_requests_that_left_are_reused_and_the_table_grows():
    table = RequestTable(torch.device("cpu"))
    reqs = [make(f"r{i}", temperature=float(i)) for i in range(3)]
    table.settings(reqs)
    slot_of_r1 = table.entries[reqs[1]].slot
    newcomer = make("new", temperature=7.0)
    settings = table.settings([reqs[0], newcomer, reqs[2]])  # r1 left, "new" joined
    assert reqs[1] not in table.entries
    assert table.entries[newcomer].slot == slot_of_r1
    assert settings.temperature.tolist() == [0.0, 7.0, 2.0]
    many = [make(f"m{i}", temperature=i / 10) for i in range(20)]  # beyond the first 8 slots
    assert torch.allclose(table.settings(many).temperature, torch.tensor([i / 10 for i in range(20)]))
    assert len({table.entries[r].slot for r in many}) == 20
