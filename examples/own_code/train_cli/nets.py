"""This project's network: a module of its own, so the logged model can ship it (code_paths=["nets.py"])."""

import torch
from torch import nn


class TabularNet(nn.Module):
    """Two hidden layers; one logit per class."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
