"""The Flower apps: a ClientApp that runs a device's handlers and a ServerApp that runs the split server.

Both use Flower's Message API (flwr >= 1.17: ``@app.train("forward")`` handles messages of type
``train.forward``); the split exchange is its own set of message types (lamsc.federated.messages). The same
apps run in Flower's simulation (lamsc.federated.simulation) and on real devices with ``flwr run``: there a
SuperNode names its folders in its node config (``flower-supernode --node-config "data-dir='...'
state-dir='...'"``) and the ServerApp reads the run config (``model``, ``out``, and SplitPlan's fields).
Flower is imported inside these functions only: lamsc imports without it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lamsc.errors import UserError
from lamsc.federated.device import Device
from lamsc.federated.messages import (EVAL_FORWARD, EVAL_SCORE, HELLO, TRAIN_BACKWARD, TRAIN_FORWARD, TRAIN_LOSS,
                                      from_records, to_records)
from lamsc.federated.server import SplitPlan, SplitServer
from lamsc.semcom.model import load_model

NODE_WAIT_S = 120.0  # how long the server waits for the simulation's or the federation's nodes to register


def client_app(data_dirs: list[Path] | None = None, state_root: Path | None = None, threads: int | None = None):
    """A ClientApp. In a simulation, node ``partition-id`` i holds ``data_dirs[i]`` and keeps its state in
    ``state_root/client-i``; on a device, its node config names ``data-dir`` and ``state-dir``. ``threads``:
    torch's intra-op threads per message (None: torch's own choice, all of a device's cores)."""
    from flwr.app import Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def folders(context) -> tuple[Path, Path, int]:
        config = context.node_config
        if "data-dir" in config:
            return Path(config["data-dir"]), Path(config["state-dir"]), int(config.get("partition-id", 0))
        i = int(config["partition-id"])
        return Path(data_dirs[i]), Path(state_root) / f"client-{i}", i

    def handler(action: str):
        def on_message(message, context):
            if threads is not None:
                torch.set_num_threads(threads)
            data, state, partition = folders(context)
            reply = handle(action, from_records(message.content), data, state, partition)
            return Message(to_records(reply), reply_to=message)
        return on_message

    for action in (HELLO, TRAIN_FORWARD, TRAIN_LOSS, TRAIN_BACKWARD, EVAL_FORWARD, EVAL_SCORE):
        category, name = action.split(".")
        getattr(app, category)(name)(handler(action))
    return app


def handle(action: str, content: dict, data_dir: Path, state_dir: Path, partition: int) -> dict:
    """A device's reply content to a message of type ``action`` with ``content`` (what the ClientApp runs)."""
    control = content.get("control", {})
    if action == HELLO:
        return {"metrics": {"partition": partition}}
    if "plan" in control:
        Device.write_plan(state_dir, control["plan"])
    device = Device(state_dir, data_dir, partition)
    if action == TRAIN_FORWARD:
        return device.forward(control, content.get("parameters"))
    if action == TRAIN_LOSS:
        return device.loss(control, content["activations"])
    if action == TRAIN_BACKWARD:
        return device.backward(control, content["gradients"])
    if action == EVAL_FORWARD:
        return device.evaluate_forward(control, content.get("parameters"))
    return device.evaluate_score(control, content["activations"])


def local_exchange(data_dirs: list[Path], state_root: Path):
    """An exchange that calls each device's handler in this process, every message through Flower's records
    and back (for tests that stop and resume runs without starting the simulation runtime)."""
    def exchange(action: str, contents: dict[int, dict]) -> dict[int, dict]:
        return {p: from_records(to_records(handle(action, from_records(to_records(c)), Path(data_dirs[p]),
                                                  Path(state_root) / f"client-{p}", p)))
                for p, c in contents.items()}
    return exchange


def server_app(make_server, clients: int | None, until_round: int | None = None, progress=None,
               result: dict | None = None):
    """A ServerApp that waits for ``clients`` nodes (None: the run config's ``clients``), orders them by partition
    id, and runs ``make_server(context)`` (a SplitServer) over them; the server's final state goes into
    ``result["state"]``."""
    from flwr.app import Message
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        wanted = clients if clients is not None else int(context.run_config.get("clients", 2))
        deadline = time.monotonic() + NODE_WAIT_S
        while len(list(grid.get_node_ids())) < wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(list(grid.get_node_ids()))} of {wanted} nodes registered")
            time.sleep(0.1)
        nodes = sorted(grid.get_node_ids())[:wanted]

        def exchange(action: str, contents: dict[int, dict]) -> dict[int, dict]:
            messages = [Message(to_records(c), dst_node_id=node_of[p], message_type=action)
                        for p, c in contents.items()]
            replies = {}
            for reply in grid.send_and_receive(messages):
                if reply.has_error():
                    raise RuntimeError(f"a device failed at {action}: {reply.error.reason}")
                replies[partition_of[reply.metadata.src_node_id]] = from_records(reply.content)
            missing = set(contents) - set(replies)
            if missing:
                raise RuntimeError(f"devices {sorted(missing)} did not answer {action}")
            return replies

        hello = {}
        for reply in grid.send_and_receive([Message(to_records({"control": {}}), dst_node_id=n, message_type=HELLO)
                                            for n in nodes]):
            hello[reply.metadata.src_node_id] = int(from_records(reply.content)["metrics"]["partition"])
        partition_of = hello
        node_of = {p: n for n, p in hello.items()}
        server: SplitServer = make_server(context)
        state = server.serve(exchange, sorted(node_of), until_round, progress)
        if result is not None:
            result["state"] = state
            result["model"] = server.write_model()

    return app


RUN_CONFIG = ("model", "out", "clients", "rounds", "local-steps", "rank", "batch", "crop", "lr", "device-lr",
              "eval-snr", "seed")


def run_config_server(context):
    """A SplitServer from a ``flwr run`` run config: ``model`` (a lamsc model file; "" for the shipped one), ``out``,
    and SplitPlan's fields in kebab case (``local-steps``...)."""
    config = dict(context.run_config)
    unknown = set(config) - set(RUN_CONFIG)
    if unknown:
        raise UserError(f"unknown run config keys {sorted(unknown)}; known: {', '.join(RUN_CONFIG)}")
    base = load_model(config.get("model") or None)
    fields = {k.replace("-", "_"): v for k, v in config.items() if k not in ("model", "out", "clients")}
    return SplitServer(base, SplitPlan(base.config.to_json(), classes=base.config.classes, **fields),
                       Path(config.get("out", "lamsc-out/federate")))


def __getattr__(name: str):
    """``lamsc.federated.apps:clientapp`` and ``:serverapp`` for ``flwr run``: folders from each SuperNode's node
    config, the plan from the run config (``clients`` nodes, default 2)."""
    if name == "clientapp":
        return client_app()
    if name == "serverapp":
        return server_app(run_config_server, None)
    raise AttributeError(name)
