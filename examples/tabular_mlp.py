"""Evolve an optimizer for a small MLP on scikit-learn's breast-cancer data (bundled: no
download), written as an objective function: you own the training loop, evoopt hands you the
candidate optimizer.

    pip install "evoopt[examples]"
    evoopt run quickstart --task examples/tabular_mlp.py:objective --out runs/tabular

Try one optimizer first with ``evoopt evaluate adam --task examples/tabular_mlp.py:objective``;
``--set hidden=128`` (or ``batch_size``, ``split_seed``) changes a field of the task below.

The value is the validation cross-entropy (lower is better), not the accuracy: on 114
validation samples the accuracy moves in steps of 1/114 and many optimizers tie.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

import evoopt

Split = tuple[torch.Tensor, torch.Tensor]


def load(split_seed: int) -> dict[str, Split]:
    """Stratified 60/20/20 train/val/test splits, features standardised with the training
    split's mean and standard deviation."""
    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y,
                                                  random_state=split_seed)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                              random_state=split_seed)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8

    def tensors(a: np.ndarray, b: np.ndarray) -> Split:
        return torch.tensor((a - mean) / std, dtype=torch.float32), torch.tensor(b)

    return {"train": tensors(x_tr, y_tr), "val": tensors(x_va, y_va),
            "test": tensors(x_te, y_te)}


@evoopt.objective(name="tabular-mlp", direction="minimize", steps=300, seeds=2,
                  time_limit_s=30, threads=1,
                  params={"hidden": 64, "batch_size": 64, "split_seed": 0})
def objective(trial: evoopt.Trial) -> evoopt.Score:
    """Train the MLP with the candidate optimizer; score it on ``trial.split`` (``val`` during
    the search, ``test`` for the final report)."""
    p, device = trial.params, trial.device
    data = trial.cache(("data", p["split_seed"]), lambda: load(p["split_seed"]))
    x, y = (t.to(device) for t in data["train"])
    # the global RNG is seeded per (task, seed): every genome starts from the same weights
    model = nn.Sequential(nn.Linear(x.shape[1], p["hidden"]), nn.ReLU(),
                          nn.Linear(p["hidden"], 2)).to(device)
    opt = trial.make_optimizer(model.parameters())  # the candidate optimizer
    order = trial.generator("data")                 # the same batches for every genome
    for step in range(trial.total_steps):
        idx = torch.randint(len(y), (p["batch_size"],), generator=order).to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        trial.backward(loss)  # keeps the graph when the genome reads curvature
        opt.step()
        if step % 25 == 0:
            trial.report(step, loss.item())
    xs, ys = (t.to(device) for t in data[trial.split])
    with torch.no_grad():
        logits = model(xs)
    val_loss = F.cross_entropy(logits, ys).item()
    accuracy = (logits.argmax(1) == ys).float().mean().item()
    return evoopt.Score(val_loss, accuracy=accuracy, loss=val_loss)


# what reports call the value, and that the Score carries an accuracy worth a column
objective.score_label = "val cross-entropy (nats)"
objective.reports_accuracy = True
