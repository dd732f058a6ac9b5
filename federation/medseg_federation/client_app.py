"""The ClientApp entry every Flower app declares.

The sites of this federation are medseg nodes (`medseg-federated node`),
native programs that answer the SuperLink themselves; no Python ClientApp
runs at them. Should a Python SuperNode join this run anyway, it answers
every message with an error saying so, and the strategy counts it as a
failure instead of averaging arrays it never trained.
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

app = ClientApp()


def _refuse(msg: Message, context: Context) -> Message:
    raise RuntimeError(
        "this federation's sites are medseg nodes: start `medseg-federated node "
        "--superlink HOST:PORT --config SITE.toml` instead of a Python SuperNode"
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Refuse: training happens in medseg nodes."""
    return _refuse(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Refuse: evaluation happens in medseg nodes."""
    return _refuse(msg, context)
