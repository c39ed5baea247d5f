"""How the agent's forked processes and their caller talk: pickled messages over a Unix socket, big ones
in a memory file whose descriptor crosses the socket (tabtrack.tracking.worker), and the compact skops
writer those processes log scikit-learn models with (tabtrack.tracking.skops_save)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import zipfile
from multiprocessing.connection import Connection

import numpy as np
import pytest
import skops.io
from mlflow.exceptions import MlflowException
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabtrack.tracking.skops_save import _writes_what_skops_writes, save_skops
from tabtrack.tracking.worker import _IN_MEMORY_FILE, BIG_MESSAGE_BYTES, _dumps, _read_memory_file, _received, _send


@pytest.fixture
def connection_pair():
    left, right = socket.socketpair()
    sender, receiver = Connection(left.detach()), Connection(right.detach())
    yield sender, receiver
    sender.close()
    receiver.close()


def test_a_big_message_crosses_in_a_memory_file_and_small_ones_through_the_socket(connection_pair):
    sender, receiver = connection_pair
    big = np.arange(3 * BIG_MESSAGE_BYTES // 8, dtype=np.float64)  # 3 MiB
    for message in (("small", 1), ("big", big), ("small", 2)):
        _send(sender, _dumps(message))

    assert pickle.loads(receiver.recv_bytes()) == ("small", 1)
    assert receiver.recv_bytes() == _IN_MEMORY_FILE  # on the socket: a notice, not 3 MiB
    name, array = pickle.loads(_read_memory_file(receiver))
    assert name == "big"
    np.testing.assert_array_equal(array, big)
    assert next(_received(receiver)) == ("small", 2)


def test_messages_sent_from_several_threads_arrive_whole(connection_pair):
    # A forked process's log records go out from whichever thread logged, while its main thread answers:
    # big answers (a memory-file notice, then the descriptor) and records over 16 KiB (two writes each)
    # must not interleave.
    sender, receiver = connection_pair
    big = np.ones(BIG_MESSAGE_BYTES // 4, dtype=np.float64)  # 2 MiB
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(_received(receiver)), daemon=True)
    reader.start()

    def send(kind: str, count: int, payload) -> None:
        for number in range(count):
            _send(sender, _dumps((kind, number, payload)))

    threads = [
        threading.Thread(target=send, args=("answer", 20, big), daemon=True),
        threading.Thread(target=send, args=("log", 200, "x" * 20_000), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a sender is stuck: the stream was garbled"
    sender.close()
    reader.join(timeout=60)

    assert [n for kind, n, _ in received if kind == "answer"] == list(range(20))
    assert [n for kind, n, _ in received if kind == "log"] == list(range(200))
    assert all(np.array_equal(payload, big) for kind, _, payload in received if kind == "answer")
    assert all(payload == "x" * 20_000 for kind, _, payload in received if kind == "log")


# -- the compact skops writer ----------------------------------------------------------------------
def _forest():
    X = np.random.default_rng(0).normal(size=(300, 4))
    return make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)).fit(
        X, X[:, 0] > 0
    ), X


def test_the_compact_writer_writes_what_skops_writes_without_the_indentation(tmp_path):
    assert _writes_what_skops_writes()  # the check the agent makes before using it, on these versions
    model, X = _forest()
    path = tmp_path / "model.skops"
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    save_skops(model, path, trusted)

    schema = zipfile.ZipFile(path).read("schema.json")
    assert b"\n" not in schema  # compact; skops' own dump indents it
    assert json.loads(schema)["__class__"] == "Pipeline"
    loaded = skops.io.load(path, trusted=trusted)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_the_compact_writer_rejects_an_untrusted_type_as_mlflow_does(tmp_path):
    model = make_pipeline(SimpleImputer(strategy=np.median), StandardScaler()).fit(np.ones((5, 2)))
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    assert "numpy.median" in untrusted  # a function skops does not trust by default
    with pytest.raises(MlflowException, match="references untrusted types"):
        save_skops(model, tmp_path / "model.skops", [])
    assert not (tmp_path / "model.skops").exists()
    save_skops(model, tmp_path / "model.skops", untrusted)  # trusted explicitly: saved
    assert (tmp_path / "model.skops").exists()


def test_the_agents_processes_log_sklearn_models_with_the_compact_writer(tmp_path):
    # Put in place of MLflow's writer only where the agent prepares its forks (a fresh interpreter here);
    # the model MLflow stores through it loads and predicts as the original.
    probe = f"""
import zipfile, numpy as np, mlflow.sklearn
from sklearn.ensemble import RandomForestClassifier
from tabtrack.tracking.skops_save import use_compact_skops_save
X = np.random.default_rng(0).normal(size=(200, 3))
model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, X[:, 0] > 0)
assert use_compact_skops_save()
mlflow.sklearn.save_model(model, {str(tmp_path / "saved")!r}, serialization_format="skops",
                          skops_trusted_types=["sklearn.tree._tree.Tree"])
assert b"\\n" not in zipfile.ZipFile({str(tmp_path / "saved" / "model.skops")!r}).read("schema.json")
loaded = mlflow.sklearn.load_model({str(tmp_path / "saved")!r})
assert (loaded.predict_proba(X) == model.predict_proba(X)).all()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
