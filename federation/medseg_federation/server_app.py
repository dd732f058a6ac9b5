"""ServerApp: Flower's FedAvg or FedProx over medseg nodes.

Every round the strategy sends the global arrays and a config
(`server-round`, `local-iterations`, and `proximal-mu` for FedProx) to the
sampled nodes, which train with medseg and answer with the arrays they
share and `num-examples`. The app records, per round, what each node sent,
what the strategy made of it, and the nodes' validation Dice, from the
initial arrays (round 0) on (`rounds.csv`, `round_<r>/`), and saves the
final arrays
(`final.safetensors`).
"""

import csv
import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx
from safetensors.numpy import load_file, save_file

app = ServerApp()


def _save_arrays(path: Path, arrays: ArrayRecord, extra: dict | None = None) -> None:
    tensors = {k: np.ascontiguousarray(v.numpy()) for k, v in arrays.items()}
    save_file(tensors, str(path), metadata={k: str(v) for k, v in (extra or {}).items()})


def recording(base):
    """A strategy class that records every round's replies and aggregate."""

    class Recording(base):
        out: Path

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            folder = self.out / f"round_{server_round}"
            folder.mkdir(parents=True, exist_ok=True)
            sent = []
            for msg in replies:
                if msg.has_error():
                    continue
                node = msg.metadata.src_node_id
                m = next(iter(msg.content.metric_records.values()))
                n = int(m["num-examples"])
                for name, record in msg.content.array_records.items():
                    _save_arrays(folder / f"node_{node}.safetensors", record, {"num-examples": n})
                sent.append({"node": node, "num-examples": n, "train_loss": m.get("train_loss")})
            if arrays is not None:
                _save_arrays(folder / "aggregate.safetensors", arrays)
            failures = sum(1 for msg in replies if msg.has_error())
            (folder / "train.json").write_text(
                json.dumps({"replies": sent, "failures": failures, "time": time.time()}, indent=1)
            )
            return arrays, metrics

        def aggregate_evaluate(self, server_round, replies):
            replies = list(replies)
            metrics = super().aggregate_evaluate(server_round, replies)
            folder = self.out / f"round_{server_round}"
            folder.mkdir(parents=True, exist_ok=True)
            per_node = []
            for msg in replies:
                if not msg.has_error():
                    m = next(iter(msg.content.metric_records.values()))
                    per_node.append(
                        {"node": msg.metadata.src_node_id, "dice": m.get("dice"),
                         "num-examples": int(m["num-examples"])}
                    )
            (folder / "evaluate.json").write_text(
                json.dumps({"per_node": per_node, "aggregate": dict(metrics or {})}, indent=1)
            )
            return metrics

    return Recording


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config."""
    cfg = context.run_config
    out = Path(str(cfg["output-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    initial = load_file(str(cfg["initial-arrays"]))
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in initial.items()})
    name = str(cfg["strategy"])
    n = int(cfg["min-nodes"])
    common = dict(
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=1.0 if bool(cfg["evaluate"]) else 0.0,
        min_train_nodes=n,
        min_evaluate_nodes=n,
        min_available_nodes=n,
    )
    if name == "FedAvg":
        strategy = recording(FedAvg)(**common)
    elif name == "FedProx":
        strategy = recording(FedProx)(proximal_mu=float(cfg["proximal-mu"]), **common)
    else:
        raise ValueError(f"run config `strategy`: {name!r}, expected 'FedAvg' or 'FedProx'")
    strategy.out = out
    if bool(cfg["evaluate"]):
        # round 0: the nodes validate the initial arrays, the baseline of
        # the Dice curve
        messages = strategy.configure_evaluate(0, arrays, ConfigRecord(), grid)
        replies = grid.send_and_receive(messages, timeout=float(cfg["round-timeout"]))
        strategy.aggregate_evaluate(0, replies)
    train_config = ConfigRecord({"local-iterations": int(cfg["local-iterations"])})
    result = strategy.start(
        grid=grid,
        initial_arrays=arrays,
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        train_config=train_config,
    )
    _save_arrays(out / "final.safetensors", result.arrays)
    rounds = sorted(set(result.train_metrics_clientapp) | set(result.evaluate_metrics_clientapp))
    with open(out / "rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["round", "train_loss", "valid_dice"])
        for r in rounds:
            t = result.train_metrics_clientapp.get(r) or {}
            e = result.evaluate_metrics_clientapp.get(r) or {}
            w.writerow([r, t.get("train_loss", ""), e.get("dice", "")])
