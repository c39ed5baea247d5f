"""Issue 4 benchmark: MLP epoch time, DataLoader loop vs tabtrack's device-resident loop, on CPU and
(where present) CUDA; XGBoost fit time on CPU vs CUDA where XGBoost's CUDA build is installed.

Imports only the model code (torch, numpy, scikit-learn): it runs on a GPU machine without MLflow.

    PYTHONPATH=src python -m benchmarks.gpu [--rows 1000000] [--epochs 3] [--batch-size 4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def dataloader_epoch_seconds(X: np.ndarray, y: np.ndarray, device: str, batch_size: int, epochs: int) -> float:
    """The common pattern: a TensorDataset in host memory fed through a DataLoader."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = _net(torch, X.shape[1]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    loader = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=batch_size, shuffle=True)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb).squeeze(-1), yb)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tabtrack_epoch_seconds(X: np.ndarray, y: np.ndarray, device: str, batch_size: int, epochs: int) -> float:
    """tabtrack's MLP: data resident on the device, index-sliced batches, loss summed on the device."""
    from tabtrack_runtime.torch_mlp import TorchMLPRegressor

    times: list[float] = []
    last = [time.perf_counter()]

    def tick(epoch, record):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    model = TorchMLPRegressor(
        hidden_layers=(128, 64, 32), dropout=0.0, epochs=epochs, batch_size=batch_size,
        validation_fraction=0.0, device=device, random_state=0,
    )  # fmt: skip
    model.epoch_callback = tick
    last[0] = time.perf_counter()
    model.fit(X, y)
    return statistics.median(times[1:] or times)  # the first epoch carries device warm-up


def xgboost_fit_seconds(X: np.ndarray, y: np.ndarray, device: str) -> float | None:
    try:
        import xgboost
    except ImportError:
        return None
    if device == "cuda" and not xgboost.build_info().get("USE_CUDA"):
        return None
    start = time.perf_counter()
    xgboost.XGBRegressor(n_estimators=100, tree_method="hist", device=device).fit(X, y)
    return time.perf_counter() - start


def _net(torch, n_features: int):
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    import torch

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    y = (X[:, :5].sum(axis=1) + rng.normal(0, 0.1, args.rows)).astype(np.float32)
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    print(
        f"MLP 30-128-64-32-1, {args.rows:,} x {args.features}, batch {args.batch_size}, median of {args.epochs} epochs"
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, devices: {', '.join(devices)}")
    results = {}
    for device in devices:
        loader = dataloader_epoch_seconds(X, y, device, args.batch_size, args.epochs)
        resident = tabtrack_epoch_seconds(X, y, device, args.batch_size, args.epochs + 1)
        results[device] = resident
        print(
            f"{device:>4}: DataLoader {loader:.3f} s/epoch, tabtrack resident {resident:.3f} s/epoch, speed-up {loader / resident:.1f}x"
        )
    if "cuda" in results:
        print(
            f"cuda vs cpu (tabtrack loop): {results['cpu'] / results['cuda']:.1f}x; target <= 0.10 s/epoch on an H100"
        )
    for device in devices:
        seconds = xgboost_fit_seconds(X, y, device)
        print(f"xgboost fit (100 trees) on {device}: " + ("not available" if seconds is None else f"{seconds:.2f} s"))


if __name__ == "__main__":
    main()
