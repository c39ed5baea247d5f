"""A PyTorch MLP (tabtrack_runtime.torch_mlp): per-epoch loss curves, early stopping, CPU or CUDA."""

from __future__ import annotations

from tabtrack.models.spec import ModelSpec


def _space(trial, task: str) -> dict:
    width = trial.suggest_categorical("width", [32, 64, 128, 256])
    depth = trial.suggest_int("depth", 1, 3)
    return {
        "hidden_layers": [width // (2**i) for i in range(depth)],
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    }


SPECS = (
    ModelSpec(
        name="mlp",
        summary="PyTorch multilayer perceptron (Adam, early stopping; CPU or CUDA)",
        estimators={
            "classification": "tabtrack_runtime.torch_mlp:TorchMLPClassifier",
            "regression": "tabtrack_runtime.torch_mlp:TorchMLPRegressor",
        },
        search_space=_space,
        trusted_types=("tabtrack_runtime.torch_mlp.TorchMLPClassifier", "tabtrack_runtime.torch_mlp.TorchMLPRegressor"),
        requires=("torch",),
        iterative=True,
        device_param="device",
        # Deterministic on CPU; CUDA kernels may reorder float sums, so allow a hair of drift.
        reproduce_tolerance=1e-6,
    ),
)
