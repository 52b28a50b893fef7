"""Runs that finished with finite numbers but did not learn: their status must not say `ok`.

The rule (README, "When things go wrong"): a run has diverged when
  - every test image got the same score (the flow maps all inputs alike, so the scores rank
    nothing and every AUROC is exactly 0.5), or
  - the mean training loss of its last meta epoch exceeds DIVERGED_LOSS. The loss is a
    negative log-likelihood per feature dimension: a flow that learns keeps it of order 1
    (it starts near 1 and goes negative); a flow blown up by too large a learning rate
    reaches 1e20 and more while staying finite.
NaN and infinite losses and scores are caught during training (train.NonFiniteLossError).
"""
import sys

import numpy as np

DIVERGED_LOSS = 1e6


def divergence_reason(state):
    """Why a finished run counts as diverged, or None when it looks trained."""
    scores = np.asarray(state["test_scores"], dtype=np.float64)
    losses = state.get("loss_history") or []
    if len(scores) > 1 and np.ptp(scores) == 0:
        return f"all {len(scores)} test scores are equal ({scores[0]:.4g})"
    if losses and losses[-1] > DIVERGED_LOSS:
        return f"training loss {losses[-1]:.3g} > {DIVERGED_LOSS:.0e}"
    return None


def label_divergence(row, tag):
    """The row with status `diverged: <reason>` when its run diverged (printed as well);
    the reason comes from the run's metrics (reports.class_reports stores it)."""
    reason = row.get("divergence")
    if not reason or row.get("status") != "ok":
        return row
    print(f"WARNING [{tag}] training diverged: {reason}; its metrics are left out of the "
          f"table's means. Lower lr_init (or clamp_alpha) and retrain", file=sys.stderr)
    return {**row, "status": f"diverged: {reason}"}
