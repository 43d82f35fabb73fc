"""When an idle event stream's keepalive falls due (acp/api/sse.py)."""

import math

from acp.api.sse import HEARTBEAT_GRID, _next_heartbeat


def test_keepalives_fall_due_on_the_grid_never_early_and_at_most_one_step_late():
    interval = 15.0
    for step in range(2000):
        now = 1000.0 + step * 0.0137  # loop clocks at arbitrary moments
        due = _next_heartbeat(now, interval)
        assert now + interval <= due < now + interval + HEARTBEAT_GRID + 1e-9
        assert math.isclose(due / HEARTBEAT_GRID, round(due / HEARTBEAT_GRID), abs_tol=1e-6)


def test_streams_opened_within_one_step_of_each_other_share_their_keepalive_moment():
    # 10,000 idle channels opened over 120 s: ~8 in each 0.1 s, all of whose keepalives come due in one wake-up.
    start = 500.0 + HEARTBEAT_GRID * 0.05
    moments = {_next_heartbeat(start + k * HEARTBEAT_GRID * 0.1, 15.0) for k in range(9)}
    assert len(moments) == 1
