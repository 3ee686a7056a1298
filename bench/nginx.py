"""nginx for the benchmark: a static upstream and the reference keep-alive reverse proxy.

Each nginx runs in the foreground (``daemon off``) as a child of the harness, with its own prefix
directory under the run's temporary directory: config, pid file, error log and temp paths all live
there, so nothing outside it is read or written (``-p PREFIX -c CONF -e ERRLOG``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.processes import ChildFailed, Children, log_tail, wait_for_port

# Characters nginx would interpret inside a single-quoted ``return`` string.
_UNSAFE_IN_RETURN = re.compile(r"['\\$]")


def _common(prefix: Path, workers: int) -> str:
    return f"""worker_processes {workers};
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
"""


def _http_common(prefix: Path) -> str:
    return f"""    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
"""


_STATIC_PATH = re.compile(r"^(/[A-Za-z0-9_-]+)+$")


def static_upstream_conf(
    prefix: Path,
    port: int,
    body: str,
    workers: int = 1,
    files: dict[str, str] | None = None,
    files_root: Path | None = None,
) -> str:
    """An nginx answering every request (any method, POST included) with ``body`` as JSON.

    ``return 200 '…'`` works for every method and discards the request body while keeping the
    connection alive, which is what an upstream behind a proxy should do. ``files`` maps exact
    paths to larger bodies (nginx refuses long ``return`` strings): served from ``files_root``
    (written by :func:`write_static_files`), POST included — the static module's 405 for POST
    is turned into the file with a 200.
    """
    if _UNSAFE_IN_RETURN.search(body):
        raise ValueError("the static body must not contain quotes, backslashes or '$'")
    locations = ""
    for path in files or {}:
        if not _STATIC_PATH.match(path):
            raise ValueError(f"static file path {path!r} must be /segments of [A-Za-z0-9_-]")
        locations += f"""        location = {path} {{
            root {files_root or prefix / "www"};
            default_type application/json;
            error_page 405 =200 $uri;
        }}
"""
    return f"""{_common(prefix, workers)}
http {{
{_http_common(prefix)}
    server {{
        listen 127.0.0.1:{port};
{locations}        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def write_static_files(root: Path, files: dict[str, str]) -> None:
    """Write the bodies :func:`static_upstream_conf` serves for ``files`` under ``root``, all
    world-readable: nginx started as root serves them from unprivileged workers. Use a
    directory that holds nothing else (the run's work directory stays private)."""
    root.chmod(0o755)
    for path, body in files.items():
        if not _STATIC_PATH.match(path):
            raise ValueError(f"static file path {path!r} must be /segments of [A-Za-z0-9_-]")
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        for directory in target.relative_to(root).parents:
            (root / directory).chmod(0o755)
        target.write_text(body, encoding="utf-8")
        target.chmod(0o644)


def reverse_proxy_conf(prefix: Path, port: int, upstream_port: int, workers: int = 1) -> str:
    """nginx as a plain keep-alive reverse proxy to 127.0.0.1:``upstream_port`` (the reference)."""
    return f"""{_common(prefix, workers)}
http {{
{_http_common(prefix)}
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # 100 KB bodies stay in memory: no temp files (the work directory is private to
            # the harness, and disk would measure something else).
            client_body_buffer_size 1m;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """Path of the nginx executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ChildFailed("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


def nginx_version() -> str:
    """``nginx/1.22.1`` or similar."""
    out = subprocess.run(
        [nginx_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def start_nginx(children: Children, prefix: Path, conf: str, port: int) -> subprocess.Popen[bytes]:
    """Write ``conf`` under ``prefix``, test it, start nginx in the foreground, wait for ``port``."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf, encoding="utf-8")
    pid_path = prefix / "nginx.pid"
    argv = [
        nginx_binary(),
        "-p",
        str(prefix),
        "-c",
        str(conf_path),
        "-e",
        str(prefix / "error.log"),
        "-g",
        f"daemon off; pid {pid_path};",
    ]
    check = subprocess.run(
        [*argv, "-t", "-q"], capture_output=True, text=True, timeout=20, check=False
    )
    if check.returncode != 0:
        raise ChildFailed(f"nginx -t refused {conf_path}:\n{check.stderr.strip()}")
    log = prefix / "stdout.log"
    proc = children.start(argv, log=log)
    try:
        wait_for_port(port, proc, log)
    except ChildFailed as exc:
        raise ChildFailed(f"{exc}\n{log_tail(prefix / 'error.log')}") from None
    return proc
