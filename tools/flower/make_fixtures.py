#!/usr/bin/env python3
"""Writes the Flower wire fixtures that `crates/medseg-federated/tests/flower_wire.rs` reads.

Each fixture is a message built and serialised by the real flwr package
(the release pinned in tools/flower/setup_venv.sh): its content-addressed
objects, its object tree, the `PullMessagesResponse` bytes a SuperLink would
send for it, and the values it holds, so the Rust side checks that it reads
what Flower writes and writes what Flower would. Run with the venv's Python:

    target/flower-venv/bin/python tools/flower/make_fixtures.py
"""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "crates/medseg-federated/tests/fixtures/flower"


def build(chunk_size: int | None) -> dict:
    # the chunk size is read when flwr is imported: one process per size
    code = f"""
import base64, json, numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.app.metadata import Metadata
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
import flwr

rng = np.random.default_rng(7)
arrays = {{
    "encoder.conv0.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
    "encoder.conv0.bias": np.zeros(4, dtype=np.float32),
    "zeros_a": np.zeros(40, dtype=np.float32),
    "zeros_b": np.zeros(40, dtype=np.float32),
    "decoder.out_conv.weight": rng.standard_normal((5, 4, 1, 1)).astype(np.float32),
    "scalar": np.array(2.5, dtype=np.float32),
    "as_float64": np.linspace(0, 1, 6).reshape(2, 3),
}}
content = RecordDict({{
    "arrays": ArrayRecord({{k: Array(v) for k, v in arrays.items()}}),
    "config": ConfigRecord({{
        "server-round": 3, "local-iterations": 20, "proximal-mu": 0.01,
        "flag": True, "name": "liver \\"site\\" é", "blob": b"\\x00\\x01",
        "ints": [1, -2, 3], "floats": [0.5, 1.5], "names": ["a", "b"],
        "big": 2**63 + 5,
    }}),
    "metrics": MetricRecord({{"num-examples": 56, "loss": 0.25, "hist": [1.0, 2.0]}}),
}})
md = Metadata(run_id=99, message_id="", src_node_id=1, dst_node_id=1234,
              reply_to_message_id="", group_id="3", created_at=1780000000.5,
              ttl=43200.0, message_type="train", src_task_id=17, dst_task_id=None)
msg = Message(content=content, metadata=md)
msg.metadata.__dict__["_message_id"] = msg.object_id
objects = {{oid: base64.b64encode(o.deflate()).decode() for oid, o in get_all_nested_objects(msg).items()}}
tree = get_object_tree(msg)
stripped = Message(metadata=msg.metadata, content=RecordDict())
resp = PullMessagesResponse(messages_list=[message_to_proto(stripped)], message_object_trees=[tree])

emd = Metadata(run_id=99, message_id="", src_node_id=1234, dst_node_id=1,
               reply_to_message_id=msg.object_id, group_id="3", created_at=1780000001.0,
               ttl=43199.5, message_type="train", src_task_id=None, dst_task_id=17)
err = Message(error=Error(code=2, reason="boom at site"), metadata=emd)
err.metadata.__dict__["_message_id"] = err.object_id

def enc(v):
    if isinstance(v, bytes):
        return {{"bytes": base64.b64encode(v).decode()}}
    if isinstance(v, bool):
        return {{"bool": v}}
    if isinstance(v, int):
        return {{"int": str(v)}}
    if isinstance(v, float):
        return {{"float": v}}
    if isinstance(v, str):
        return {{"str": v}}
    if isinstance(v, list):
        return {{"list": [enc(x) for x in v]}}
    raise TypeError(v)

print(json.dumps({{
    "flwr_version": flwr.__version__,
    "chunk_size": {chunk_size!r},
    "root": msg.object_id,
    "objects": objects,
    "pull_messages_response": base64.b64encode(resp.SerializeToString()).decode(),
    "expected": {{
        "run_id": 99, "dst_node_id": 1234, "src_node_id": 1, "message_type": "train",
        "group_id": "3", "created_at": 1780000000.5, "ttl": 43200.0,
        "arrays": {{k: {{"dtype": str(v.dtype), "shape": list(v.shape),
                        "values": v.astype(np.float64).ravel().tolist()}} for k, v in arrays.items()}},
        "array_order": list(arrays),
        "config": {{k: enc(v) for k, v in content["config"].items()}},
        "metrics": {{k: enc(v) for k, v in content["metrics"].items()}},
        "record_order": list(content.keys()),
        "config_order": list(content["config"].keys()),
    }},
    "error_message": {{
        "root": err.object_id,
        "objects": {{oid: base64.b64encode(o.deflate()).decode()
                    for oid, o in get_all_nested_objects(err).items()}},
        "code": 2, "reason": "boom at site",
    }},
}}, indent=1))
"""
    env = dict(os.environ)
    if chunk_size is not None:
        env["FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE"] = str(chunk_size)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"building the fixture failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # Flower's default chunking: the Rust side must give identical objects
    (OUT / "train_message.json").write_text(json.dumps(build(None), indent=1) + "\n")
    # tiny chunks: arrays split into several chunks, some of them identical
    (OUT / "train_message_chunked.json").write_text(json.dumps(build(64), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
