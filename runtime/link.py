"""A real link between two processes: the transmitter sends framed payloads over TCP on loopback, the
channel model acts on each frame as it arrives ("the air"), and the receiver decodes what is left.

Frame: magic b"LSCF", sequence number (u32), payload length (u32), then the payload; a frame of length 0
ends the stream. TCP delivers every byte it is given; loss and damage come from the channel model only, so
a payload the receiver cannot read (CRC mismatch) is counted as damaged, and a sequence number that never
arrives as missing. Neither is fatal.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from lamsc.allocator import keep_freed_memory
from lamsc.semcom.channels import Channel
from lamsc.semcom.transmission import Receiver, Transmitter, deliver

MAGIC = b"LSCF"
FRAME = struct.Struct(">4sII")
TIMEOUT_S = 600.0


def send_frame(sock: socket.socket, seq: int, payload: bytes) -> None:
    sock.sendall(FRAME.pack(MAGIC, seq, len(payload)) + payload)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError(f"link closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """(sequence, payload), or None at the end of the stream."""
    magic, seq, length = FRAME.unpack(recv_exact(sock, FRAME.size))
    if magic != MAGIC:
        raise ConnectionError("not a lamsc frame: something else is talking to this port")
    return None if length == 0 else (seq, recv_exact(sock, length))


def transmitter_process(deployment, images: list[np.ndarray], snr_db: float, asc: bool, port_q, report_q) -> None:
    keep_freed_memory()  # a spawned endpoint does lamsc's work and ends, as the lamsc command does
    try:
        backend, _, segmenter = deployment.open()
        tx = Transmitter(backend, segmenter, asc, snr_db)
        port = port_q.get(timeout=TIMEOUT_S)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            for seq, image in enumerate(images):
                sent = tx.send(image)
                send_frame(sock, seq, sent.payload)
                report_q.put(("sent", seq, {"bits": 8 * len(sent.payload), "value_count": sent.value_count,
                                            "side_bits": sent.side_bits, "seconds": sent.seconds,
                                            "pack_backend": sent.pack_backend}))
            sock.sendall(FRAME.pack(MAGIC, 0, 0))
        report_q.put(("tx_done", -1, {"backend": backend.name}))
    except Exception as e:  # reported to the parent, which decides; a dead child must not hang it
        report_q.put(("tx_error", -1, {"error": f"{type(e).__name__}: {e}"}))


def receiver_process(deployment, sizes: list[tuple[int, int]], channel: Channel, seed: int, port_q, report_q) -> None:
    keep_freed_memory()
    try:
        backend, _, _ = deployment.open()
        rx = Receiver(backend)
        with socket.create_server(("127.0.0.1", 0)) as server:
            port_q.put(server.getsockname()[1])
            server.settimeout(TIMEOUT_S)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT_S)
                while (frame := recv_frame(conn)) is not None:
                    seq, payload = frame
                    h, w = sizes[seq]
                    t0 = time.perf_counter()
                    rec, errors = deliver(payload, channel, rx, h, w, seed + seq)
                    report_q.put(("received", seq, {"image": rec.image, "lost": rec.lost, "reason": rec.reason,
                                                    "bit_errors": errors, "seconds": time.perf_counter() - t0}))
        report_q.put(("rx_done", -1, {"backend": backend.name}))
    except Exception as e:
        report_q.put(("rx_error", -1, {"error": f"{type(e).__name__}: {e}"}))


@dataclass
class LinkReport:
    sent: dict = field(default_factory=dict)        # seq -> what the transmitter reported
    received: dict = field(default_factory=dict)    # seq -> what the receiver decoded
    backends: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)

    @property
    def delivered(self) -> list[int]:
        return sorted(s for s, r in self.received.items() if not r["lost"])

    @property
    def damaged(self) -> list[int]:
        return sorted(s for s, r in self.received.items() if r["lost"])

    @property
    def missing(self) -> list[int]:
        return sorted(set(self.sent) - set(self.received))


def run_link(deployment, images: list[np.ndarray], channel: Channel, asc: bool = True, seed: int = 0,
             receiver_deployment=None) -> LinkReport:
    """Send ``images`` from a transmitter process to a receiver process over TCP on loopback."""
    ctx = mp.get_context("spawn")
    port_q, report_q = ctx.Queue(), ctx.Queue()
    sizes = [im.shape[:2] for im in images]
    rx = ctx.Process(target=receiver_process, args=(receiver_deployment or deployment, sizes, channel, seed, port_q,
                                                    report_q), daemon=True)
    tx = ctx.Process(target=transmitter_process, args=(deployment, images, channel.snr_db, asc, port_q, report_q),
                     daemon=True)
    rx.start()
    tx.start()
    report, done = LinkReport(), set()
    deadline = time.monotonic() + TIMEOUT_S
    while len(done) < 2 and time.monotonic() < deadline:
        try:
            kind, seq, data = report_q.get(timeout=1.0)
        except queue.Empty:
            if not rx.is_alive() and not tx.is_alive():
                break
            continue
        if kind == "sent":
            report.sent[seq] = data
        elif kind == "received":
            report.received[seq] = data
        elif kind.endswith("_done"):
            report.backends[kind[:2]] = data["backend"]
            done.add(kind[:2])
        else:
            report.errors.append(f"{kind[:2]}: {data['error']}")
            break  # the other side would wait for it until the timeout
    for p in (tx, rx):
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
    return report

