"""A PyTorch multilayer perceptron behind the scikit-learn estimator interface, so it sits in the same
Pipeline as every other family and is saved the same way.

Speed: the whole training split lives on the device and batches are index slices of it, with no
DataLoader; the per-batch Python loop, not the arithmetic, is what costs (measured: 11.0 s/epoch with
a DataLoader vs 0.42 s resident, 1M x 30 rows on an H100). Fitted weights are kept as numpy arrays, so
the fitted estimator pickles (and skops-serialises) without torch objects; the torch module is rebuilt
on first use.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

PREDICT_BATCH = 65_536
# Called after each epoch with (epoch, {"train_loss": ..., "val_loss": ..., "val_<metric>": ...}).
EpochCallback = Callable[[int, dict[str, float]], None]


def resolve_device(requested: str) -> str:
    """ "auto" picks CUDA when torch sees a GPU; "cuda" without one is an error the caller reports."""
    if requested == "cpu":
        return "cpu"
    has_cuda = False
    if not _without_nvidia_driver():
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except ImportError:
            pass
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise RuntimeError("no CUDA device is visible")
    return "cuda"


def _without_nvidia_driver() -> bool:
    """On Linux no library sees a GPU without NVIDIA's kernel driver (/proc/driver/nvidia), or WSL 2's GPU
    bridge (/dev/dxg): then torch's import (~2.5 s, for an XGBoost run too) need not be paid to learn that."""
    return sys.platform.startswith("linux") and not any(map(os.path.exists, ("/proc/driver/nvidia", "/dev/dxg")))


class _TorchMLP(BaseEstimator):
    epoch_callback: EpochCallback | None = None  # set on the instance by the caller, never a parameter

    # scikit-learn validates these before fit (and tabtrack before a run starts)
    _parameter_constraints: ClassVar[dict] = {
        "hidden_layers": ["array-like"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        hidden_layers: Sequence[int] = (128, 64, 32),
        dropout: float = 0.1,
        epochs: int = 100,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 10,
        validation_fraction: float = 0.1,
        device: str = "cpu",
        random_state: int = 0,
    ):
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state

    # -- training --------------------------------------------------------------------------
    def _fit(self, X, targets: np.ndarray, n_outputs: int):
        import torch

        self._validate_params()
        torch.manual_seed(self.random_state)
        device = torch.device(resolve_device(self.device))
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        order = np.random.default_rng(self.random_state).permutation(n)
        n_val = max(1, round(n * self.validation_fraction)) if self.validation_fraction > 0 and n >= 20 else 0
        val_idx, fit_idx = order[:n_val], order[n_val:]
        target_dtype = torch.long if n_outputs > 1 else torch.float32
        X_all = torch.as_tensor(X, device=device)
        y_all = torch.as_tensor(targets, device=device, dtype=target_dtype)
        X_fit, y_fit = X_all[fit_idx], y_all[fit_idx]
        X_val, y_val = X_all[val_idx], y_all[val_idx]

        self.n_features_in_ = X.shape[1]
        self._n_outputs = n_outputs
        net = self._network(torch).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss() if n_outputs > 1 else torch.nn.MSELoss()
        generator = torch.Generator(device=device).manual_seed(self.random_state)

        best_loss, best_state, best_epoch, waited = math.inf, None, 0, 0
        self.history_: list[dict[str, float]] = []
        for epoch in range(1, self.epochs + 1):
            net.train()
            permutation = torch.randperm(len(X_fit), device=device, generator=generator)
            total = torch.zeros((), device=device)  # summed on the device: no sync per batch
            for start in range(0, len(X_fit), self.batch_size):
                idx = permutation[start : start + self.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(X_fit[idx]).squeeze(-1), y_fit[idx])
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(idx)
            record = {"train_loss": float(total) / max(1, len(X_fit))}
            if n_val:
                record.update(self._validate(torch, net, loss_fn, X_val, y_val))
            self.history_.append(record)
            if self.epoch_callback is not None:
                self.epoch_callback(epoch, record)
            watched = record.get("val_loss", record["train_loss"])
            if watched < best_loss - 1e-7:
                best_loss, best_epoch, waited = watched, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if n_val and waited >= self.patience:
                    break
        self.best_epoch_ = best_epoch
        self.n_epochs_ = len(self.history_)
        net.load_state_dict(best_state)
        # numpy weights: the fitted estimator carries no torch objects (portable, skops-friendly)
        self.weights_ = [v.numpy().copy() for v in best_state.values()]
        self.weight_names_ = list(best_state)
        self._net = None
        return self

    def _validate(self, torch, net, loss_fn, X_val, y_val) -> dict[str, float]:
        net.eval()
        with torch.no_grad():
            out = net(X_val).squeeze(-1)
            record = {"val_loss": float(loss_fn(out, y_val))}
            if self._n_outputs > 1:
                record["val_accuracy"] = float((out.argmax(dim=1) == y_val).float().mean())
            else:
                record["val_rmse"] = float(torch.sqrt(((out - y_val) ** 2).mean())) * self._target_scale()
        return record

    def _target_scale(self) -> float:
        return 1.0

    def _network(self, torch):
        layers, width = [], self.n_features_in_
        for size in self.hidden_layers:
            layers += [torch.nn.Linear(width, int(size)), torch.nn.ReLU()]
            if self.dropout > 0:
                layers.append(torch.nn.Dropout(self.dropout))
            width = int(size)
        layers.append(torch.nn.Linear(width, self._n_outputs))
        return torch.nn.Sequential(*layers)

    # -- inference (always on CPU: the logged model must serve anywhere) ------------------------
    def torch_module(self):
        """The fitted network as a torch.nn.Module on the CPU (also what mlflow.pytorch logs)."""
        import torch

        if getattr(self, "_net", None) is None:
            net = self._network(torch)
            net.load_state_dict({k: torch.as_tensor(v) for k, v in zip(self.weight_names_, self.weights_, strict=True)})
            net.eval()
            self._net = net
        return self._net

    def _raw_outputs(self, X) -> np.ndarray:
        import torch

        net = self.torch_module()
        X = np.asarray(X, dtype=np.float32)
        with torch.no_grad():
            parts = [net(torch.as_tensor(X[i : i + PREDICT_BATCH])).numpy() for i in range(0, len(X), PREDICT_BATCH)]
        return np.concatenate(parts) if parts else np.empty((0, self._n_outputs), dtype=np.float32)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_net", None)
        state.pop("epoch_callback", None)
        return state


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    def fit(self, X, y):
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        return self._fit(X, encoded.astype(np.int64), n_outputs=len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        logits = self._raw_outputs(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self._raw_outputs(X).argmax(axis=1)]


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        # trains on a standardised target: one learning rate suits any target scale
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        return self._fit(X, ((y - self.y_mean_) / self.y_std_).astype(np.float32), n_outputs=1)

    def _target_scale(self) -> float:
        return getattr(self, "y_std_", 1.0)

    def predict(self, X) -> np.ndarray:
        return self._raw_outputs(X)[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_
