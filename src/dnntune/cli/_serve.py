"""``dnntune serve RUN_DIR``: the run folder's model behind an HTTP API (POST /predict, GET /health, /metadata)."""

from __future__ import annotations

import os


def _wait_ms(text: str) -> float | None:
    import argparse

    if text.lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: off or milliseconds (e.g. 2)") from None


def cmd_serve(args) -> int:
    from ..deploy._serve import serve
    from ..errors import ConfigError

    token = args.token if args.token is not None else os.environ.get("DNNTUNE_TOKEN") or None
    if token is not None and args.no_token:
        raise ConfigError("--no-token: cannot be combined with a token (--token or DNNTUNE_TOKEN)")
    serve(args.run_dir, host=args.host, port=args.port, engine=args.engine, workers=args.workers, token=token,
          batch_wait_ms=args.batch_wait_ms, device=args.device, max_body_bytes=args.max_body_bytes,
          allow_no_token=args.no_token, access_log=args.access_log, threads=args.threads)
    return 0


def add_commands(sub) -> None:
    """Register ``serve`` on the top-level subparsers."""
    from ..deploy._serve import DEFAULT_BATCH_WAIT_MS, ENGINES, MAX_BODY_BYTES

    s = sub.add_parser("serve", help="serve a run folder's model over HTTP",
                       description="Serve a run folder's model over HTTP: POST /predict {\"inputs\": [...]} "
                       "(one sample or a list of samples), GET /health, GET /metadata. Binds to 127.0.0.1 "
                       "unless --host says otherwise; another host needs a token. SIGTERM or Ctrl-C stop it "
                       "after the requests in flight. See docs/deploy.md.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="run folder (train run, trial, best/, or a tune run folder)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    s.add_argument("--engine", choices=ENGINES, default="torch",
                   help="torch (default) or onnxruntime (needs `dnntune export RUN_DIR --format onnx` first)")
    s.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /predict and /metadata (default: "
                   "the DNNTUNE_TOKEN environment variable, which other users cannot read from the process list)")
    s.add_argument("--no-token", action="store_true", dest="no_token",
                   help="allow a non-loopback --host without a token (e.g. behind an authenticating proxy)")
    s.add_argument("--device", default="cpu", help="auto, cpu (default), cuda or cuda:N")
    s.add_argument("--threads", type=int, default=1, help="intra-op threads of each worker's model (default 1; "
                   "for more throughput add --workers instead)")
    s.add_argument("--batch-wait-ms", type=_wait_ms, default=DEFAULT_BATCH_WAIT_MS, dest="batch_wait_ms",
                   metavar="MS|off", help="dynamic batching: the requests waiting while a forward pass runs, and "
                   "those arriving within MS milliseconds, share the next pass (default 0: no added wait; off: one "
                   "pass per request; see docs/deploy.md)")
    s.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, dest="max_body_bytes",
                   help=f"larger request bodies get 413 (default {MAX_BODY_BYTES})")
    s.add_argument("--access-log", action="store_true", dest="access_log", help="log every request to stderr")
    s.set_defaults(func=cmd_serve)
