"""Hosts in network namespaces of the test's own, joined by a bridge: a partition is a link set down.

``Hosts(["a", "b"])`` makes, as root with ``ip``, a bridge in the test's namespace holding the
address of the shared services (``services``, 10.231.x.1) and, per host, a namespace with its own
loopback and one veth into the bridge (10.231.x.2, .3, ...). A process runs "on" a host through
``prefix(host)`` (``ip netns exec``; the process keeps its pid, so the supervisor signals it as
usual). ``cut(host)`` sets the host's link down: every packet between it and the rest is dropped,
open TCP connections stall instead of failing, as in a real partition; ``heal(host)`` brings it
back. Names carry the test's pid, and ``close()`` removes everything, so runs never collide.
If namespaces cannot be made (not root, no ``ip``), ``Hosts`` raises ``HostsUnavailable`` with
the reason: the test fails with it, it never passes silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass


class HostsUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    namespace: str
    address: str
    link: str  # the veth end in the test's namespace, in the bridge


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise HostsUnavailable(f"`ip {' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")


class Hosts:
    def __init__(self, names: list[str], *, subnet: int | None = None) -> None:
        if os.geteuid() != 0:
            raise HostsUnavailable("network namespaces need root (ip netns); this test process is not root")
        if shutil.which("ip") is None:
            raise HostsUnavailable("the `ip` command (iproute2) is not installed; .ci/system-deps installs it")
        tag = f"{os.getpid() % 10000}"
        self.subnet = subnet if subnet is not None else 100 + os.getpid() % 150
        self.bridge = f"cpbr{tag}"
        self.services = f"10.231.{self.subnet}.1"
        self.hosts = {name: Host(name, f"cp{name}{tag}", f"10.231.{self.subnet}.{i + 2}", f"cp{name}{tag}h")
                      for i, name in enumerate(names)}
        self._made: list[tuple[str, ...]] = []
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", "del", self.bridge))
        _ip("addr", "add", f"{self.services}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.namespace)
            self._made.append(("netns", "del", host.namespace))
            _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            self._made.append(("link", "del", host.link))
            _ip("link", "set", host.link, "master", self.bridge)
            _ip("link", "set", host.link, "up")
            inside = ("netns", "exec", host.namespace, "ip")
            _ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")

    def prefix(self, name: str) -> list[str]:
        """argv prefix that runs a command on host ``name``."""
        return ["ip", "netns", "exec", self.hosts[name].namespace]

    def cut(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "down")

    def heal(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "up")

    def close(self) -> None:
        for argv in reversed(self._made):
            with contextlib.suppress(HostsUnavailable):
                _ip(*argv)
        self._made.clear()
