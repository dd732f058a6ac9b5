#!/usr/bin/env python3
"""A real Flower federation of medseg nodes on 127.0.0.1, checked.

Starts `flower-superlink --insecure` on a free port, writes the initial
arrays (`medseg-federated init`), starts one `medseg-federated node` per
site, runs the ServerApp of `federation/` with `flwr run`, and checks:
every round's aggregate equals the example-weighted mean of the replies the
server received, each reply equals what its node says it sent, and the
nodes' validation Dice rises from the first round to the last. Every
process is stopped at the end, whatever happens. Prints a JSON summary.

Fault scenarios (`--fault`): `kill-node` kills one node (of three) after the
first round; `restart-superlink` restarts the SuperLink after the first
round and starts a second run once the nodes have rejoined.

Run it with the Python of `tools/flower/setup_venv.sh`:
    target/flower-venv/bin/python tools/flower/e2e.py --node-bin target/release/medseg-federated
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Processes:
    """Background processes, each in its own session, all stopped at exit."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], env: dict, cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        self.procs[name] = p
        return p

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        p = self.procs.pop(name)
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop_all(self) -> None:
        # nodes first, so that they can deactivate while the SuperLink runs
        for name in sorted(self.procs, key=lambda n: n.startswith("superlink")):
            self.kill(name, signal.SIGTERM)


def superlink_cmd(port: int) -> list[str]:
    return ["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(port)]


def flwr_run(env, out: Path, init: Path, rounds: int, local: int, min_nodes: int,
             timeout: float, round_timeout: float, strategy: str, logs: Path, tag: str) -> int:
    cfg = (f'num-server-rounds={rounds} local-iterations={local} min-nodes={min_nodes} '
           f'initial-arrays="{init}" output-dir="{out}" round-timeout={round_timeout} '
           f'strategy="{strategy}"')
    with open(logs / f"flwr_run_{tag}.log", "wb") as log:
        p = subprocess.run(["flwr", "run", str(REPO / "federation"), "medseg", "--stream",
                            "--run-config", cfg], env=env, cwd=REPO, stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode


def check_rounds(out: Path, nodes_dir: Path, rounds: int) -> dict:
    """Compares every aggregate with the weighted mean of its replies."""
    report = {"rounds": []}
    ev0 = out / "round_0" / "evaluate.json"
    if ev0.exists():
        ev = json.loads(ev0.read_text())
        report["initial_dice"] = ev.get("aggregate", {}).get("dice")
        report["initial_dice_per_node"] = {str(d["node"]): d["dice"]
                                           for d in ev.get("per_node", [])}
    for r in range(1, rounds + 1):
        folder = out / f"round_{r}"
        meta = json.loads((folder / "train.json").read_text())
        agg = load_file(str(folder / "aggregate.safetensors"))
        replies = []
        for rep in meta["replies"]:
            arrays = load_file(str(folder / f"node_{rep['node']}.safetensors"))
            replies.append((rep["num-examples"], arrays))
        total = sum(n for n, _ in replies)
        worst = 0.0
        close = True
        for k, a in agg.items():
            mean = sum(n * arr[k].astype(np.float64) for n, arr in replies) / total
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - mean))))
            # float32 sums of float32 products, against the float64 mean
            close &= bool(np.allclose(a, mean, rtol=1e-5, atol=1e-6))
        plain = {k: sum(arr[k].astype(np.float64) for _, arr in replies) / len(replies)
                 for k in agg}
        plain_close = all(np.allclose(agg[k], plain[k], rtol=1e-5, atol=1e-6) for k in agg)
        # what the server received is what the nodes sent, bit for bit
        identical = 0
        for _, arrays in replies:
            for f in nodes_dir.glob(f"*/replies/*_{r}_train.safetensors"):
                w = load_file(str(f))
                w.pop("__num_examples__", None)
                if w.keys() == arrays.keys() and all(np.array_equal(w[k], arrays[k]) for k in w):
                    identical += 1
                    break
        ev_path = folder / "evaluate.json"
        ev = json.loads(ev_path.read_text()) if ev_path.exists() else {}
        report["rounds"].append({
            "round": r, "replies": len(replies), "failures": meta["failures"],
            "num_examples": [n for n, _ in replies], "arrays": len(agg),
            "max_abs_error_vs_weighted_mean": worst,
            "equals_weighted_mean": close,
            "equals_plain_mean": plain_close,
            "replies_identical_to_node_side": identical,
            "dice": ev.get("aggregate", {}).get("dice"),
            "dice_per_node": {str(d["node"]): d["dice"] for d in ev.get("per_node", [])},
        })
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--node-bin", required=True, help="the medseg-federated binary")
    ap.add_argument("--sites", default="liver_site,rkidney_site")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local", type=int, default=40, help="local steps per round")
    ap.add_argument("--strategy", default="FedAvg")
    ap.add_argument("--node-strategy", default="FedAvg",
                    help="the nodes' notion of local arrays (FedAvg, FedBN, SegViz)")
    ap.add_argument("--fault", choices=["none", "kill-node", "restart-superlink"], default="none")
    ap.add_argument("--subset", type=int, default=40,
                    help="train the last site on its first N training rows only, so the sites "
                         "weigh differently in the average (0: all rows)")
    ap.add_argument("--work", help="working folder (default: a new temporary one)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="medseg-flower-")).resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               FLWR_HOME=str(work / "flwr_home"), PYTHONUNBUFFERED="1")
    port = free_port()
    (work / "flwr_home").mkdir(exist_ok=True)
    (work / "flwr_home" / "config.toml").write_text(
        f'[superlink]\ndefault = "medseg"\n\n[superlink.medseg]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    sites = args.sites.split(",")
    nodes_dir = work / "nodes"
    procs = Processes(logs)
    summary = {"work": str(work), "port": port, "sites": sites, "fault": args.fault}
    t0 = time.time()
    try:
        procs.start("superlink", superlink_cmd(port), env, work)
        wait_port(port, 60)
        init = work / "init.safetensors"
        node_set = lambda s: ["--set", f"node.output_dir={nodes_dir / s}",
                              "--set", "node.save_replies=true",
                              "--set", f'node.strategy="{args.node_strategy}"']
        subprocess.run([args.node_bin, "init", "--config", f"federation/sites/{sites[0]}.toml",
                        "--out", str(init), *node_set(sites[0])], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        extra = {s: [] for s in sites}
        if args.subset > 0:
            # the phantom data now exist (init generated them): a smaller
            # manifest beside the last site's own
            last = sites[-1]
            src = REPO / "data/federation2d" / last / "train.csv"
            rows = src.read_text().splitlines()
            (src.parent / "train_e2e_subset.csv").write_text(
                "\n".join(rows[: 1 + args.subset]) + "\n")
            extra[last] = ["--set", f"site.train_csv={last}/train_e2e_subset.csv"]
        for s in sites:
            procs.start(f"node_{s}", [args.node_bin, "node", "--insecure",
                                      "--superlink", f"127.0.0.1:{port}",
                                      "--config", f"federation/sites/{s}.toml", "--max-wait", "180",
                                      *node_set(s), *extra[s]], env, REPO)
        out = work / "server"
        round_timeout = 120.0 if args.fault == "kill-node" else 600.0
        if args.fault == "none":
            rc = flwr_run(env, out, init, args.rounds, args.local, len(sites), args.timeout,
                          round_timeout, args.strategy, logs, "1")
            summary["flwr_run_exit"] = rc
            summary.update(check_rounds(out, nodes_dir, args.rounds))
            dice = [summary.get("initial_dice")] + [r["dice"] for r in summary["rounds"]]
            summary["dice_rises"] = None not in dice and dice[-1] > dice[0]
            ok = rc == 0 and summary["dice_rises"] and all(
                r["replies"] == len(sites) and r["replies_identical_to_node_side"] == len(sites)
                and r["equals_weighted_mean"] for r in summary["rounds"])
        else:
            # start the run in the background and inject the fault after round 1
            cfg_rounds = args.rounds
            run = subprocess.Popen(
                ["flwr", "run", str(REPO / "federation"), "medseg", "--stream", "--run-config",
                 f'num-server-rounds={cfg_rounds} local-iterations={args.local} '
                 f'min-nodes={len(sites) - (1 if args.fault == "kill-node" else 0)} '
                 f'initial-arrays="{init}" output-dir="{out}" round-timeout={round_timeout} '
                 f'strategy="{args.strategy}"'],
                env=env, cwd=REPO, stdout=open(logs / "flwr_run_1.log", "wb"),
                stderr=subprocess.STDOUT)
            end = time.time() + args.timeout
            while not (out / "round_1" / "train.json").exists() and time.time() < end:
                time.sleep(0.5)
            summary["round_1_done_s"] = round(time.time() - t0, 1)
            if args.fault == "kill-node":
                procs.kill(f"node_{sites[-1]}")
                summary["killed"] = sites[-1]
                rc = run.wait(timeout=args.timeout)
                summary["flwr_run_exit"] = rc
                summary.update(check_rounds(out, nodes_dir, cfg_rounds))
                ok = rc == 0
            else:
                procs.kill("superlink", signal.SIGKILL)
                summary["superlink_killed_s"] = round(time.time() - t0, 1)
                try:
                    run.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    run.kill()
                summary["first_run_exit"] = run.returncode
                time.sleep(5)
                procs.start("superlink_2", superlink_cmd(port), env, work)
                wait_port(port, 60)
                summary["superlink_restarted_s"] = round(time.time() - t0, 1)
                out2 = work / "server_2"
                rc = flwr_run(env, out2, init, 1, args.local, len(sites), args.timeout,
                              round_timeout, args.strategy, logs, "2")
                summary["second_run_exit"] = rc
                summary["second_run"] = check_rounds(out2, nodes_dir, 1)
                ok = rc == 0 and summary["second_run"]["rounds"][0]["replies"] == len(sites)
        summary["seconds"] = round(time.time() - t0, 1)
        summary["ok"] = bool(ok)
    except Exception as e:  # report, then clean up
        summary["ok"] = False
        summary["error"] = f"{type(e).__name__}: {e}"
    finally:
        procs.stop_all()
    node_logs, node_ids = {}, {}
    for f in sorted(logs.glob("node_*.log")):
        lines = f.read_text(errors="replace").splitlines()
        node_logs[f.stem] = lines[-8:]
        # the site's node IDs, in the order it joined (a rejoin adds one)
        node_ids[f.stem[len("node_"):]] = [l.split(" as node ")[-1].strip()
                                           for l in lines if " as node " in l]
    summary["node_log_tails"] = node_logs
    summary["node_ids"] = node_ids
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
