"""``dnntune serve``: a run folder's model behind an HTTP API, on uvicorn (the app is in ``_serve_app``).

:func:`serve` checks its settings, loads the model (PyTorch via ``load_run``, or the exported ONNX model via
``load_onnx``), binds the socket itself (so a port in use is a clear error) and runs uvicorn: one process, or
``workers`` processes sharing the socket, each with its own copy of the model. SIGTERM or Ctrl-C stop it
gracefully: the socket closes, requests in flight finish (up to ``GRACEFUL_S`` seconds), exit status 0.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from ._engine import ENGINES, load_model
from ._serve_app import MAX_BODY_BYTES, BadRequest, create_app, parse_inputs

__all__ = ["BadRequest", "ENGINES", "MAX_BODY_BYTES", "create_app", "model_id", "parse_inputs", "serve"]


DEFAULT_BATCH_WAIT_MS: float | None = 0.0  # merge the requests already waiting (benchmarks/bench_serve.py)
GRACEFUL_S = 30  # how long a stopping server waits for requests in flight
_ENV_CONFIG = "DNNTUNE_SERVE_CONFIG"  # how `serve(workers=N)` hands its settings to the worker processes
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """True if ``host`` (a name or an address) reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def model_id(path: str | Path) -> str:
    """``NAME@HASH``: the run folder's name (with its study for ``best/`` and trials) and the first 12 hex
    digits of the SHA-256 of its weights (``model.safetensors``, else ``model.onnx``), or of an .onnx file."""
    p = Path(path)
    if p.is_dir():
        from ._run import WEIGHTS, resolve_run_dir

        p = resolve_run_dir(p)
        weights = p / WEIGHTS if (p / WEIGHTS).is_file() else p / "model.onnx"
        keep = 3 if p.parent.name == "trials" else 2 if p.name == "best" else 1
        name = "/".join(p.resolve().parts[-keep:])
    else:
        weights, name = p, p.stem
    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return f"{name}@{h.hexdigest()[:12]}"


def _check(host: str, port: Any, engine: str, workers: Any, threads: Any, token: str | None, batch_wait_ms: Any,
           max_body_bytes: Any, allow_no_token: bool) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"engine: {engine!r}; allowed: {', '.join(ENGINES)}")
    for name, v, lo, hi in (("port", port, 0, 65535), ("workers", workers, 1, 64), ("threads", threads, 1, 256),
                            ("max_body_bytes", max_body_bytes, 1024, 2**31)):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"{name}: {v!r}; allowed: a whole number from {lo} to {hi}")
    if batch_wait_ms is not None and (isinstance(batch_wait_ms, bool) or not isinstance(batch_wait_ms, (int, float))
                                      or not 0 <= batch_wait_ms <= 1000):
        raise ConfigError(f"batch_wait_ms: {batch_wait_ms!r}; allowed: off (None) or 0 to 1000 milliseconds")
    if token is not None and (len(token) < 8 or not all(33 <= ord(c) <= 126 for c in token)):
        raise ConfigError("token: at least 8 characters, printable ASCII without spaces (e.g. the output of "
                          "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if not is_loopback(host) and token is None:
        if not allow_no_token:
            raise ConfigError(f"host: {host} is reachable from other machines; set a token (--token or the "
                              f"DNNTUNE_TOKEN environment variable), or pass --no-token if a proxy in front "
                              f"authenticates the clients")
        print(f"dnntune: WARNING: serving on {host} without a token: anyone who can reach this machine can "
              f"query the model", file=sys.stderr, flush=True)


def _run_files(path: str | Path) -> dict:
    """What ``/metadata`` takes from the run folder when the model does not carry it (an ONNX model)."""
    import yaml

    from ._run import RECIPE, SUMMARY, resolve_run_dir

    p = Path(path)
    out: dict[str, Any] = {}
    try:
        folder = resolve_run_dir(p if p.is_dir() else p.parent)
        out["recipe"] = yaml.safe_load((folder / RECIPE).read_text(encoding="utf-8"))
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
        out.update(metrics=summary.get("metrics"), trained=summary.get("env"))
    except (UserError, OSError, ValueError, yaml.YAMLError, AttributeError):
        pass  # an .onnx file on its own: /metadata shows what its JSON holds
    return out


def _build_app(s: dict):
    """Load the model named by the settings ``s`` and wrap it in the app."""
    model = load_model(s["run_dir"], s["engine"], s["device"], s["threads"])
    extra = {} if getattr(model, "summary", None) else _run_files(s["run_dir"])
    return create_app(model, token=s["token"], max_body_bytes=s["max_body_bytes"],
                      batch_wait_ms=s["batch_wait_ms"], model_id=model_id(s["run_dir"]), engine=s["engine"],
                      allowed_hosts=_LOOPBACK_HOSTS | {s["host"]} if is_loopback(s["host"]) else None,
                      metadata_extra=extra)


def app_from_env():
    """The app of one worker process of ``serve(workers=N)`` (a uvicorn factory; settings in the environment)."""
    return _build_app(json.loads(os.environ[_ENV_CONFIG]))


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"host: {host!r} is not an address or a known host name ({e})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        hint = "; another program listens there: pick another --port" if e.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"port: cannot listen on {host}:{port} ({e.strerror}){hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch", workers: int = 1,
          token: str | None = None, batch_wait_ms: float | None = DEFAULT_BATCH_WAIT_MS, device: str = "cpu",
          max_body_bytes: int = MAX_BODY_BYTES, allow_no_token: bool = False, access_log: bool = False,
          threads: int = 1) -> None:
    """Serve a run folder's model over HTTP until SIGTERM or Ctrl-C (see docs/deploy.md, "Serve over HTTP").

    Args:
        run_dir: a run folder (``train`` run, trial, ``best/``, tune run folder); for ``engine="onnxruntime"``
            also an .onnx file or a folder holding ``model.onnx`` (``dnntune export RUN_DIR --format onnx``).
        host: the address to listen on; loopback by default. Any other needs ``token`` or ``allow_no_token``.
        port: the TCP port (0: any free port, printed at start).
        engine: ``torch`` or ``onnxruntime``.
        workers: processes, each with its own model and its own forward passes.
        token: if set, ``/predict`` and ``/metadata`` require ``Authorization: Bearer TOKEN``.
        batch_wait_ms: dynamic batching: the requests waiting while a forward pass runs, plus those arriving
            within this many milliseconds, go through the next pass together (up to 256 samples). 0 (default):
            no added wait. None: one pass per request.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        max_body_bytes: larger request bodies get 413.
        allow_no_token: serve a non-loopback host without a token (a warning is printed).
        access_log: log each request (uvicorn's access log) to stderr.
        threads: intra-op threads of each worker's model (torch or onnxruntime). 1 by default: a request's
            forward pass is too small to share, and a second thread that is not scheduled at once (a busy
            machine, the client on the same cores) stalls every pass (see benchmarks/bench_serve.py).

    Raises:
        ConfigError: a setting is not allowed (the message names it), or the port cannot be bound.
        DataError: the run folder or one of its files is missing or unreadable.
    """
    _check(host, port, engine, workers, threads, token, batch_wait_ms, max_body_bytes, allow_no_token)
    settings = {"run_dir": str(run_dir), "engine": engine, "device": device, "token": token, "host": host,
                "workers": workers, "threads": threads, "max_body_bytes": max_body_bytes,
                "batch_wait_ms": batch_wait_ms}
    app = _build_app(settings)  # with several workers: loaded once here too, so a bad run folder fails now
    sock = _bind(host, port)
    try:
        _run(app, settings, sock, access_log)
    finally:
        sock.close()


def _run(app, settings: dict, sock: socket.socket, access_log: bool) -> None:
    import uvicorn

    workers = settings["workers"]
    shown = sock.getsockname()
    where = f"[{shown[0]}]" if sock.family == socket.AF_INET6 else shown[0]
    print(f"dnntune: serving {model_id(settings['run_dir'])} ({settings['engine']}, {workers} worker(s)) on "
          f"http://{where}:{shown[1]}  POST /predict, GET /health, GET /metadata"
          f"{'; token required' if settings['token'] else ''}; SIGTERM or Ctrl-C stops", file=sys.stderr, flush=True)
    common = {"log_level": "info", "access_log": access_log, "timeout_graceful_shutdown": GRACEFUL_S,
              "server_header": False, "lifespan": "on"}
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ[_ENV_CONFIG] = json.dumps(settings)
        config = uvicorn.Config("dnntune.deploy._serve:app_from_env", factory=True, workers=workers, **common)
        Multiprocess(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(uvicorn.Config(app, **common))
    # uvicorn re-raises the stopping signal once shut down; with these no-op handlers in place that ends
    # the call normally (exit status 0) instead of killing the process with it
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not server.started:
        raise UserError("the server did not start; see uvicorn's messages above")
