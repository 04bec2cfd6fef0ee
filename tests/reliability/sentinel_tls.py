"""A Redis Sentinel set that speaks TLS only, on loopback: a primary, a replica and three sentinels.

The certificates are made with ``openssl`` when the set starts: a CA, one server certificate for
every node (SAN ``IP:127.0.0.1`` and ``DNS:localhost``, since the sentinels report the primary by
its IP) and a client certificate for mutual TLS. Every node listens on a ``tls-port`` only
(``port 0``); the replica replicates and the sentinels monitor over TLS (``tls-replication yes``).
With ``mutual``, every node wants a client certificate signed by the CA (``tls-auth-clients yes``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.devtools.demo.redis_server import free_port

from .sentinel import DOWN_AFTER_MS, MASTER, _wait


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of them


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert)
    return cert, key


def _signed(root: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (root / f"{name}.key", root / f"{name}.csr", root / f"{name}.crt",
                           root / f"{name}.ext")
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
             "-extfile", ext, "-out", cert)
    return cert, key


def make_certificates(root: Path) -> Certificates:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed (run .ci/system-deps)")
    root.mkdir(parents=True, exist_ok=True)
    ca = _ca(root, "test-ca")
    other, _ = _ca(root, "other-ca")
    server = _signed(root, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                         "extendedKeyUsage=serverAuth,clientAuth\n")
    client = _signed(root, "client", ca, "extendedKeyUsage=clientAuth\n")
    for key in (server[1], client[1]):
        key.chmod(0o600)
    return Certificates(ca=ca[0], server_cert=server[0], server_key=server[1], client_cert=client[0],
                        client_key=client[1], other_ca=other)


class TlsSentinelSet:
    def __init__(self, root: Path, *, mutual: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (run .ci/system-deps)")
        self.binary, self.root, self.mutual = binary, root, mutual
        self.certs = make_certificates(root / "certs")
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """Every role's Redis settings: TLS to the sentinels and (``rediss://``) to the data nodes."""
        env = {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
               "REDIS_SENTINEL_MASTER": MASTER, "REDIS_SENTINEL_TLS": "on",
               "REDIS_URL": "rediss://127.0.0.1/0", "REDIS_TLS_CA_FILE": str(self.certs.ca)}
        if self.mutual:
            env["REDIS_TLS_CERT_FILE"] = str(self.certs.client_cert)
            env["REDIS_TLS_KEY_FILE"] = str(self.certs.client_key)
        return env

    def _tls(self) -> list[str]:
        """The TLS lines of every node (also its client side: replication and monitoring)."""
        return ["tls-cert-file", str(self.certs.server_cert), "tls-key-file", str(self.certs.server_key),
                "tls-ca-cert-file", str(self.certs.ca), "tls-auth-clients", "yes" if self.mutual else "no",
                "tls-replication", "yes"]

    def client(self, port: int, **kwargs: object) -> redis.Redis:
        """A test's own TLS client of one node (to check on it, not the product's)."""
        options: dict[str, object] = {"ssl": True, "ssl_ca_certs": str(self.certs.ca), "socket_connect_timeout": 1,
                                      "socket_timeout": 2, "ssl_certfile": str(self.certs.client_cert),
                                      "ssl_keyfile": str(self.certs.client_key)}
        return redis.Redis(port=port, **{**options, **kwargs})  # type: ignore[arg-type]

    def _data_node(self, name: str, port: int, *extra: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        tls = self._tls()
        args = [f"--{word}" if i % 2 == 0 else word for i, word in enumerate(tls)]
        self.procs.append(subprocess.Popen(
            [self.binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--dir", str(self.root / name), "--logfile", str(self.root / name / "redis.log"),
             *args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def start(self) -> TlsSentinelSet:
        try:
            self._data_node("primary", self.primary_port)
            _wait(lambda: self.client(self.primary_port).ping(), "the TLS primary did not start")
            self._data_node("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
            replica = self.client(self.replica_port)
            _wait(lambda: replica.info("replication").get("master_link_status") == "up",
                  "the replica did not sync over TLS")
            tls = self._tls()
            lines = "".join(f"{tls[i]} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
            for port in self.sentinel_ports:
                conf = self.root / f"sentinel-{port}.conf"
                conf.write_text(f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {self.root}\n{lines}"
                                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                                f"sentinel failover-timeout {MASTER} 5000\nsentinel parallel-syncs {MASTER} 1\n")
                self.procs.append(subprocess.Popen([self.binary, str(conf), "--sentinel",
                                                    "--logfile", str(self.root / f"sentinel-{port}.log")],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in self.sentinel_ports:
                s = self.client(port)
                _wait(lambda s=s: len(s.sentinel_sentinels(MASTER)) == 2 and len(s.sentinel_slaves(MASTER)) == 1,
                      f"TLS sentinel {port} did not see its peers and the replica")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
