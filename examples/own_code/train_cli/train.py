"""One training script, three models, the flags such scripts have; every run recorded by tabtrack.

python train.py --model rf
python train.py --model xgboost --learning-rate 0.1
python train.py --model nn --epochs 40 --batch-size 64 --learning-rate 1e-3
python train.py --model nn --no-track          # metrics printed, nothing recorded
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import tabtrack

DATA = Path(__file__).resolve().parents[2] / "breast_cancer.csv"  # the example table shipped with tabtrack


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["rf", "xgboost", "nn"], default="rf")
    parser.add_argument("--data", type=Path, default=DATA, help="CSV with a `target` column")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--experiment-name", default="breast-cancer-own-code")
    parser.add_argument("--no-track", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def train_forest(X_train, y_train, args):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, random_state=args.seed).fit(X_train, y_train)


def train_xgboost(X_train, y_train, args):
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=200, learning_rate=args.learning_rate if args.learning_rate > 0.01 else 0.1,
                         max_depth=4, random_state=args.seed).fit(X_train, y_train)  # fmt: skip


def train_network(X_train, y_train, args, run):
    """A plain PyTorch loop; each epoch's losses go to the run with log_epoch."""
    import torch
    from nets import TabularNet

    torch.manual_seed(args.seed)
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.15, stratify=y_train,
                                                  random_state=args.seed)  # fmt: skip
    scaler = StandardScaler().fit(X_fit)
    net = TabularNet(X_train.shape[1], n_classes=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    features = torch.as_tensor(scaler.transform(X_fit), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(y_fit), dtype=torch.long)
    val_features = torch.as_tensor(scaler.transform(X_val), dtype=torch.float32)
    val_labels = torch.as_tensor(np.asarray(y_val), dtype=torch.long)
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(features))
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(features[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        net.eval()
        with torch.no_grad():
            val_loss = loss_fn(net(val_features), val_labels).item()
        run.log_epoch(epoch, train_loss=total / len(order), val_loss=val_loss)
    return tabtrack.TorchModel(net, task="classification", preprocess=scaler, classes=[0, 1])


def main() -> None:
    args = parse_args()
    frame = pd.read_csv(args.data)
    X, y = frame.drop(columns=["target"]), frame["target"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=args.seed)
    params = {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate}  # fmt: skip
    with tabtrack.start_run(experiment=args.experiment_name, run_name=args.model, data=args.data, params=params,
                            seed=args.seed, track=not args.no_track, code_paths=["nets.py"]) as run:  # fmt: skip
        if args.model == "nn":
            model = train_network(X_train, y_train, args, run)
        elif args.model == "xgboost":
            model = train_xgboost(X_train, y_train, args)
        else:
            model = train_forest(X_train, y_train, args)
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    where = f"run {result.run_id}" if result.run_id else "not tracked"
    print(f"{args.model}: test accuracy {result.metrics['test']['accuracy']:.3f}, roc_auc "
          f"{result.metrics['test']['roc_auc']:.3f} ({where})")  # fmt: skip


if __name__ == "__main__":
    main()
