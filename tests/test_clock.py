"""The running clock: epoch times leave out the spells the process was stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

from tailmix.pipeline.clock import RunningClock


class _Fake:
    """A wall clock and a CPU clock the test moves."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def clock(self, **kw) -> RunningClock:
        return RunningClock(time_fn=lambda: self.wall, cpu_fn=lambda: self.cpu, **kw)


def test_only_idle_gaps_of_a_watched_clock_count_as_stopped():
    fake = _Fake()
    clock = fake.clock(tick=0.5, stall=3.0)
    clock.watching = True
    clock.now()
    for wall, cpu, stopped in [
        (0.5, 0.9, 0.0),     # a tick's work
        (3.4, 0.9, 0.0),     # idle, but under the stall
        (13.4, 1.3, 9.75),   # 10 s, 0.4 s of CPU (<= 5 %): stopped, less half a tick
        (23.4, 21.3, 9.75),  # 10 s with 20 s of CPU: a long call that held the interpreter
        (25.4, 21.3, 9.75),  # idle, under the stall
    ]:
        fake.wall, fake.cpu = wall, cpu
        assert clock.now() == pytest.approx(wall - stopped)
        assert clock.stopped_s == pytest.approx(stopped)
    clock.watching = False
    fake.wall += 100.0  # outside the context a gap is time that passed
    assert clock.now() == pytest.approx(fake.wall - 9.75)


def test_readings_never_go_backwards_and_add_up_over_random_gaps():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        fake = _Fake()
        clock = fake.clock()
        clock.watching = True
        last = clock.now()
        for gap, busy in zip(torch.rand(30, generator=gen) * 20,
                             torch.rand(30, generator=gen) < 0.5, strict=True):
            fake.wall += float(gap)
            fake.cpu += float(gap) * (1.5 if busy else 0.01)
            now = clock.now()
            assert now >= last
            last = now
        assert last + clock.stopped_s == pytest.approx(fake.wall)


def test_the_clock_refuses_a_tick_not_under_the_stall():
    with pytest.raises(ValueError, match="tick < stall"):
        RunningClock(tick=2.0, stall=2.0)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job control signals")
def test_a_process_stopped_and_continued_counts_the_stop():
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import time\n"
         "from tailmix.pipeline.clock import RunningClock\n"
         "with RunningClock() as clock:\n"
         "    t0 = clock.now(); w0 = time.perf_counter()\n"
         "    print('ready', flush=True)\n"
         "    time.sleep(4.5)\n"
         "    print(clock.now() - t0, clock.stopped_s, time.perf_counter() - w0)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    child.send_signal(signal.SIGSTOP)
    time.sleep(3.0)
    child.send_signal(signal.SIGCONT)
    out, _ = child.communicate(timeout=60)
    ran, stopped, wall = map(float, out.split())
    assert 2.5 <= stopped <= 3.5  # the 3 s stop, give or take a tick and scheduling
    assert ran + stopped == pytest.approx(wall, abs=0.05)  # three readings apart
    assert wall >= 4.5  # a sleeping process is not a stopped one: its time counts


def test_an_epochs_time_leaves_out_a_stop_and_says_how_long():
    from tailmix.pipeline.callbacks import Callback
    from tailmix.pipeline.engine import Trainer
    from tailmix.pipeline.steps import StepOutput
    from tailmix.samplers import build_sampler

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = nn.Linear(4, 2)
    lock = threading.Lock()
    jump = [0.0]

    def step(net, batch):
        logits = net(x[batch.index])
        target = nn.functional.one_hot(y[batch.index], 2).float()
        return StepOutput(nn.functional.cross_entropy(logits, target), logits, target)

    class Stop(Callback):  # the second epoch's first step: 100 s with no CPU time
        def on_step_end(self, state, step, n_steps, loss_sum, seen, lr):
            if state.epoch == 1 and step == 1:
                with lock:
                    jump[0] += 100.0

    trainer = Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      lr_schedule=lambda epoch, progress: 0.1,
                      sampler=build_sampler("instance", labels=y), step=step, epochs=2,
                      batch_size=16, seed=0, device=torch.device("cpu"), callbacks=[Stop()])
    trainer.clock = RunningClock(time_fn=lambda: time.perf_counter() + jump[0],
                                 cpu_fn=lambda: 0.0)
    started = time.perf_counter()
    trainer.fit()
    took = time.perf_counter() - started
    first, second = trainer.state.history
    assert "stopped_s" not in first
    assert second["stopped_s"] == pytest.approx(100.0, abs=0.5)
    assert second["epoch_time_s"] < took + trainer.clock.tick / 2
    assert second["images_per_s"] == pytest.approx(64 / second["epoch_time_s"])


def test_the_clock_is_not_re_entrant():
    clock = RunningClock()
    with clock, pytest.raises(RuntimeError, match="re-entrant"):
        with clock:
            pass
    with clock:  # once left, it runs again
        assert clock.watching
    assert not clock.watching


def test_a_trainer_refuses_accumulation_with_targets_by_source():
    from tailmix._validation import ParameterError
    from tailmix.losses import build_loss
    from tailmix.pipeline.engine import Trainer
    from tailmix.pipeline.steps import MixStep
    from tailmix.weights import build_weight_schedule

    step = MixStep(inputs=torch.zeros(4, 3), labels=torch.zeros(4, dtype=torch.long),
                   augment=nn.Identity(), loss=build_loss("ce", class_counts=[3, 1]),
                   num_classes=2,
                   weights=build_weight_schedule("cb", class_counts=[3, 1], epochs=2,
                                                 normalise="sources"),
                   device=torch.device("cpu"))
    model = nn.Linear(3, 2)
    with pytest.raises(ParameterError) as err:
        Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                lr_schedule=lambda e, p: 0.1, sampler=None, step=step, epochs=2,
                batch_size=4, seed=0, device=torch.device("cpu"), accumulate=2)
    assert err.value.name == "train.accumulate"
