"""Run deploy/nginx/pocketpay.conf for real: a private nginx (own prefix, pid, logs and temp
directories, a throwaway self-signed certificate) on free loopback ports in front of the
given upstream ports. Only the addresses in the file are rewritten, and each rewrite must
match, so a test breaks loudly when the file changes shape rather than testing something else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE_CONF = ROOT / "deploy" / "nginx" / "pocketpay.conf"
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+ (.*)$", re.MULTILINE)


def nginx_binary() -> str:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return binary


def self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"{SITE_CONF.name} no longer contains {old!r}: update tests/e2e/nginx.py"
    return text.replace(old, new)


def render_site(
    directory: Path, upstream_ports: list[int], https_port: int, http_port: int
) -> Path:
    """deploy/nginx/pocketpay.conf with loopback listens, the given upstreams and a test cert."""
    text = SITE_CONF.read_text()
    servers = UPSTREAM_SERVER.findall(text)
    assert len(servers) >= 2, "the upstream should list several gateway processes"
    indent, options = servers[0]
    lines = "\n".join(f"{indent}server 127.0.0.1:{p} {options}" for p in upstream_ports)
    text = UPSTREAM_SERVER.sub("", text, count=len(servers) - 1)
    text = UPSTREAM_SERVER.sub(lines, text, count=1)
    cert, key = self_signed(directory)
    text = _replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = _replace(text, "listen [::]:443 ssl http2;", "")
    text = _replace(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _replace(text, "listen [::]:80;", "")
    text = _replace(text, "/etc/pocketpay/tls/fullchain.pem", str(cert))
    text = _replace(text, "/etc/pocketpay/tls/privkey.pem", str(key))
    site = directory / "pocketpay.conf"
    site.write_text(text)
    return site


def render_main(directory: Path, site: Path) -> Path:
    """A minimal nginx.conf that includes ``site`` in its http context, like conf.d/ does."""
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    main = directory / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n"
        f"    include {site};\n}}\n"
    )
    return main


def check_config(binary: str, main: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-t", "-e", "stderr", "-p", str(main.parent), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Nginx:
    https: str
    http: str
    directory: Path

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "error.log").read_text(errors="replace")[-3000:]
        return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(directory: Path, upstream_ports: list[int]) -> Iterator[Nginx]:
    """nginx with deploy/nginx/pocketpay.conf in front of ``upstream_ports`` (bounded)."""
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    https_port, http_port = _free_port(), _free_port()
    main = render_main(directory, render_site(directory, upstream_ports, https_port, http_port))
    checked = check_config(binary, main)
    assert checked.returncode == 0, checked.stderr
    with (directory / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, "-e", "stderr", "-p", str(directory), "-c", str(main)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", https_port)) == 0:
                    break
            assert proc.poll() is None, (directory / "stderr.log").read_text()
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", directory)
    finally:
        proc.send_signal(signal.SIGTERM)  # fast shutdown
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
