"""The console's view of a training run (hubert.fairseq.launcher.Progress): updates done of
total, rate and time left, at most one line per interval, never a line per logged record."""

from __future__ import annotations

from hubert.fairseq.launcher import Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_one_line_per_interval_with_rate_and_time_left():
    clock = Clock()
    p = Progress("pretrain iter1", 8000, every_s=30.0, clock=clock)
    shown = []
    for step in range(10, 8001, 10):  # log_interval 10: 800 records, 2 updates a second
        clock.t = step / 2
        if (line := p.line("train_inner", step, {"loss_m_0": "4.5"})) is not None:
            shown.append(line)
    assert shown[0] == "pretrain iter1: update 10/8000 (0%), loss_m_0 4.500"  # no rate yet
    assert shown[1].startswith("pretrain iter1: update 70/8000 (1%), 2.00 updates/s, 1h06m left")
    assert shown[-1] == "pretrain iter1: update 8000/8000 (100%), 2.00 updates/s, loss_m_0 4.500"
    assert len(shown) == 135  # at 5 s, every 30 s after it (134 lines to 3995 s), the last: not 800


def test_the_rate_counts_from_the_first_logged_update_and_validation_is_always_shown():
    clock = Clock()
    p = Progress("finetune iter1", 100, clock=clock)
    clock.t = 25.0  # a resumed run's start-up: fairseq logs its first update (42) late
    assert p.line("train_inner", 42, {"loss": "310.0"}) == "finetune iter1: update 42/100 (42%), loss 310.000"
    clock.t = 60.0
    assert p.line("train_inner", 60, {"loss": "300.0"}) == \
        "finetune iter1: update 60/100 (60%), 0.51 updates/s, 1m18s left, loss 300.000"
    assert p.line("train_inner", 62, {"loss": "290.0"}) is None
    assert p.line("valid", 62, {"loss": "310.5"}) == "finetune iter1: valid at update 62: loss 310.500"
