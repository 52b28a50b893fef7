"""Where a training step's time goes, measured on train.train_one_epoch itself: building the
batches (moving the distinct images, rotation, normalisation), the frozen backbone, the
flow's forward and backward passes, and Adam. Used by bench.py."""
import time
from contextlib import contextmanager

import torch

import train

PARTS = ("batches", "backbone", "flow", "optimizer")


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Seconds per part; each timed call waits for the device before and after, so GPU work
    is charged to the part that queued it."""

    def __init__(self, device):
        self.device, self.seconds = device, dict.fromkeys(PARTS, 0.0)

    def timed(self, part, fn):
        def wrapper(*args, **kwargs):
            _synchronize(self.device)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _synchronize(self.device)
                self.seconds[part] += time.perf_counter() - started
        return wrapper

    def timed_chunks(self, part, make_chunks):
        """A generator function whose every next() is charged to `part`."""
        def wrapper(*args, **kwargs):
            chunks = make_chunks(*args, **kwargs)
            step = self.timed(part, lambda: next(chunks, None))
            while (item := step()) is not None:
                yield item
        return wrapper


def _adam_steppers(optimizer):
    """The objects whose step() does Adam's work: one per parameter when Adam runs inside
    backward (adam.AdamInBackward), else the optimizer itself."""
    return getattr(optimizer, "optimizers", [optimizer])


@contextmanager
def step_split(model, optimizer, device):
    """Within the block, train.train_one_epoch's time is split into PARTS; yields a dict of
    seconds that is complete when the block ends ('flow' is the rest of the epoch's time:
    forward, loss and backward without Adam)."""
    clock = _Clock(device)
    real = {"transformed": train.transformed, "take": train.take}
    train.transformed = clock.timed_chunks("batches", real["transformed"])
    train.take = clock.timed("batches", real["take"])
    model.embed = clock.timed("backbone", model.embed)  # instance attribute over the method
    steppers = _adam_steppers(optimizer)
    for stepper in steppers:
        stepper.step = clock.timed("optimizer", stepper.step)
    started = time.perf_counter()
    try:
        yield clock.seconds
    finally:
        _synchronize(device)
        total = time.perf_counter() - started
        train.transformed, train.take = real["transformed"], real["take"]
        del model.embed
        for stepper in steppers:
            del stepper.step
        others = sum(clock.seconds[p] for p in PARTS if p != "flow")
        clock.seconds["flow"] = max(0.0, total - others)


def split_line(seconds_per_step):
    """`per training step: batches 12 ms (2 %), backbone 340 ms (50 %), ...`"""
    total = sum(seconds_per_step.values())
    return "per training step: " + ", ".join(
        f"{p} {1000 * seconds_per_step[p]:.0f} ms ({100 * seconds_per_step[p] / total:.0f} %)"
        for p in PARTS)
