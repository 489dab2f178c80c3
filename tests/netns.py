"""A private network namespace joined to this one by a veth pair, for faults a loopback proxy
cannot make: a peer that vanishes (its packets, and its ACKs, never arrive).

Only addresses inside the namespace's own link (10.200.N.0/30) are used. The kernels these tests
run on may lack ``sch_netem`` ("Specified qdisc kind is unknown"), so the loss is made with a
blackhole route inside the namespace back to this side: what we send arrives, nothing
(no reply, no ACK) comes back, exactly what a vanished peer looks like from here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swagger_server.config import PROJECT_ROOT

ENSURE_IPROUTE2 = PROJECT_ROOT / "scripts" / "ensure-iproute2"


def ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, "ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def ensure_iproute2() -> None:
    done = subprocess.run([str(ENSURE_IPROUTE2)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{ENSURE_IPROUTE2} failed: {done.stderr.strip() or done.stdout.strip()}")


@dataclass
class Namespace:
    name: str
    host_ip: str  # this side of the veth pair
    ns_ip: str  # the namespace's side

    def popen(self, *command: str) -> subprocess.Popen[str]:
        """A process inside the namespace; stdin and stdout are pipes."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *command],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT, env=dict(os.environ))

    dropping: bool = False

    def drop_replies(self) -> None:
        """Nothing the namespace sends reaches this side any more (replies and ACKs lost)."""
        ip("route", "add", "blackhole", f"{self.host_ip}/32", netns=self.name)
        self.dropping = True

    def restore(self) -> None:
        if self.dropping:
            ip("route", "del", "blackhole", f"{self.host_ip}/32", netns=self.name)
            self.dropping = False


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace and veth pair; both gone afterwards (deleting the namespace deletes
    its end of the pair, and with it ours)."""
    ensure_iproute2()
    pid = os.getpid()
    subnet = f"10.200.{pid % 250 + 1}"
    ns = Namespace(name=f"pgrest-test-{pid}", host_ip=f"{subnet}.1", ns_ip=f"{subnet}.2")
    host_if, ns_if = f"pgh{pid}", f"pgn{pid}"
    try:
        ip("netns", "add", ns.name)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns.name)
        ip("addr", "add", f"{ns.host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("addr", "add", f"{ns.ns_ip}/30", "dev", ns_if, netns=ns.name)
        ip("link", "set", ns_if, "up", netns=ns.name)
        ip("link", "set", "lo", "up", netns=ns.name)
    except RuntimeError as exc:
        _remove(ns.name, host_if)
        pytest.fail(f"cannot build a network namespace here (needs root, CAP_NET_ADMIN): {exc}")
    try:
        yield ns
    finally:
        _remove(ns.name, host_if)


def _remove(name: str, host_if: str) -> None:
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        ip("netns", "del", name)
    if Path(f"/sys/class/net/{host_if}").exists():
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            ip("link", "del", host_if)
