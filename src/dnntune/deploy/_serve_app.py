"""The HTTP app of ``dnntune serve`` (FastAPI): request checks, the predictor thread, the endpoints.

``POST /predict`` takes ``{"inputs": ...}``: one sample or a list of samples as nested lists of numbers in
the model's per-sample input shape (for a CSV-trained tabular run also objects keyed by feature name; with
categories or missing values its cells may be strings and nulls, encoded by the run's saved encoder) and
returns the predicted labels, indices and probabilities (or regression values) and the model id.
``GET /health`` says the model is loaded, ``GET /metadata`` describes it. Every request is checked before it
reaches the model: a bad one gets a 4xx whose ``detail`` names what is wrong, and the server keeps serving.
Nothing a request carries is used as a path or as code. ``_serve.serve`` loads the model and runs the app
on uvicorn. See docs/deploy.md ("Serve over HTTP").
"""

import asyncio
import contextlib
import hmac
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DataError, UserError

MAX_BODY_BYTES = 4 * 2**20  # default request body limit
MAX_BATCH = 256  # samples per forward pass when dynamic batching merges requests


class BadRequest(UserError):
    """A request the server refuses; ``status`` is its HTTP status code, the message names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- requests -------------------------------------------------------------------------------------------
def _first_non_number(x: Any, where: str) -> str | None:
    """Where the first value that is not a JSON number sits in nested lists (``inputs[0][2]: 'a'``)."""
    if isinstance(x, list):
        for i, v in enumerate(x):
            found = _first_non_number(v, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return f"{where}: {json.dumps(x)[:40]} is not a number"
    if isinstance(x, int) and abs(x) > 2**63 - 1:
        return f"{where}: {str(x)[:40]} is too large"
    return None


def _rows_from_objects(rows: list, names: list[str]) -> list[list]:
    """Samples given as ``{"feature": value}`` objects as rows in the training column order."""
    allowed, out = set(names), []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(422, f"inputs[{i}]: expected an object keyed by feature name like the others, got "
                                  f"{type(row).__name__}")
        missing, unknown = [n for n in names if n not in row], sorted(set(row) - allowed)
        if missing or unknown:
            what = ([f"missing feature(s) {', '.join(missing)}"] if missing else []) + (
                [f"unknown feature(s) {', '.join(unknown)}"] if unknown else [])
            raise BadRequest(422, f"inputs[{i}]: {'; '.join(what)}; features: {', '.join(names)}")
        out.append([row[n] for n in names])
    return out


def _raw_rows(x: Any, names: list[str]) -> np.ndarray:
    """Rows of raw cells for a run whose encoder reads them (categories as text, null for missing): an object
    array (N, F) in the training column order; the encoder checks the values themselves."""
    if isinstance(x, list) and x and not isinstance(x[0], list):
        x = [x]  # one row as a list of cells
    if not isinstance(x, list) or not x:
        raise BadRequest(422, f"inputs: expected a non-empty list of rows, got {json.dumps(x)[:40]}")
    for i, row in enumerate(x):
        if not isinstance(row, list) or len(row) != len(names):
            raise BadRequest(422, f"inputs[{i}]: expected {len(names)} cells ({', '.join(names)}) or an object "
                                  f"keyed by feature name")
        for j, v in enumerate(row):
            if v is not None and (isinstance(v, (list, dict)) or (isinstance(v, float) and not np.isfinite(v))):
                raise BadRequest(422, f"inputs[{i}][{j}] ({names[j]}): {json.dumps(v)[:40]} is not a cell; send a "
                                      "number, a string, or null for a missing value")
    a = np.empty((len(x), len(names)), dtype=object)
    a[:] = x
    return a


def _inputs_field(doc: Any, send: str) -> Any:
    """The ``inputs`` field of a request body: a 422 BadRequest unless the body is an object holding only it
    (``send`` shows what to send when it is missing)."""
    if not isinstance(doc, dict):
        raise BadRequest(422, f'body: expected a JSON object {{"inputs": [...]}}, got a JSON {type(doc).__name__}')
    unknown = sorted(set(doc) - {"inputs"})
    if unknown:
        raise BadRequest(422, f"body: unknown field(s) {', '.join(map(repr, unknown))}; allowed: inputs")
    if "inputs" not in doc:
        raise BadRequest(422, f"inputs: missing field; send {send}")
    return doc["inputs"]


def parse_inputs(doc: Any, input_shape: tuple[int, ...], feature_names: list[str] | None = None,
                 may_hold_bools: bool = True, raw_cells: bool = False) -> np.ndarray:
    """A ``/predict`` body (parsed JSON) as a numeric array (N, *input_shape), checked as the model needs it.

    Args:
        doc: the parsed JSON body; must be ``{"inputs": X}`` with X one sample or a list of samples.
        input_shape: the per-sample shape the model takes.
        feature_names: tabular runs from a CSV file: the feature columns, so that samples may also be
            objects keyed by feature name (any order).
        may_hold_bools: False only if the body has no ``true``/``false`` (JSON booleans, which numpy would
            take as 1 and 0): skips looking for them value by value.
        raw_cells: the run encodes raw tabular cells (a CSV run with categories or missing values): samples
            are rows of the ``feature_names`` columns (objects or lists) whose cells may be strings and nulls;
            returns an object array (N, F) for the run's encoder.

    Returns:
        The samples with a batch dimension (a single sample becomes N = 1).

    Raises:
        BadRequest: 422 naming the field: ``inputs`` missing, an unknown field, a value that is not a finite
            number, ragged lists, or a shape that is neither one sample nor a list of samples.

    Example:
        >>> parse_inputs({"inputs": [5.1, 3.5, 1.4, 0.2]}, (4,)).shape
        (1, 4)
        >>> parse_inputs({"inputs": [{"b": 2, "a": 1}]}, (2,), ["a", "b"]).tolist()
        [[1, 2]]
        >>> parse_inputs({"inputs": [[1, 2, 3]]}, (4,))
        Traceback (most recent call last):
        dnntune.deploy._serve_app.BadRequest: inputs: expected one sample of 4 features or a list of them; got \
1 sample(s) of 3 features
    """
    x = _inputs_field(doc, '{"inputs": [...]}: one sample or a list of samples')
    if feature_names and (isinstance(x, dict) or (isinstance(x, list) and x and isinstance(x[0], dict))):
        x = _rows_from_objects([x] if isinstance(x, dict) else x, list(feature_names))
    if raw_cells and feature_names:
        return _raw_rows(x, list(feature_names))
    if not isinstance(x, list) or not x:
        raise BadRequest(422, f"inputs: expected a non-empty list (one sample or a list of samples), got "
                              f"{json.dumps(x)[:40]}")
    try:
        a = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise BadRequest(422, f"inputs: nested lists of unequal lengths; every sample has shape "
                              f"{list(input_shape)}") from None
    if a.dtype.kind not in "iuf" or may_hold_bools:
        bad = _first_non_number(x, "inputs")
        if bad or a.dtype.kind not in "iuf":
            raise BadRequest(422, bad or f"inputs: not numbers (dtype {a.dtype})")
    shape = tuple(input_shape)
    if a.shape == shape:
        a = a[None]
    if a.shape[1:] != shape:
        if a.ndim == len(shape):
            got = f"one sample of {_describe(a.shape)}"
        elif a.ndim == len(shape) + 1:
            got = f"{len(a)} sample(s) of {_describe(a.shape[1:])}"
        else:
            got = f"shape {list(a.shape)}"
        raise BadRequest(422, f"inputs: expected one sample of {_describe(shape)} or a list of them; got {got}")
    bad = ~np.isfinite(a)
    if bad.any():
        idx = "".join(f"[{int(i)}]" for i in np.argwhere(bad)[0])
        raise BadRequest(422, f"inputs{idx}: NaN/inf; the model takes finite numbers only")
    return a


def parse_texts(doc: Any) -> np.ndarray:
    """A ``/predict`` body of a text run, ``{"inputs": "a text"}`` or ``{"inputs": ["a text", ...]}``, as a 1-D
    object array of strings (the run's tokenizer encodes them).

    Example:
        >>> parse_texts({"inputs": ["a red apple", "the sea"]}).tolist()
        ['a red apple', 'the sea']
        >>> parse_texts({"inputs": [1, 2]})
        Traceback (most recent call last):
        dnntune.deploy._serve_app.BadRequest: inputs[0]: 1 is not a text; this model classifies texts (strings)
    """
    x = _inputs_field(doc, '{"inputs": ["a text", ...]}')
    x = [x] if isinstance(x, str) else x
    if not isinstance(x, list) or not x:
        raise BadRequest(422, f"inputs: expected a text or a non-empty list of texts, got {json.dumps(x)[:40]}")
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise BadRequest(422, f"inputs[{i}]: {json.dumps(t)[:40]} is not a text; this model classifies texts "
                                  "(strings)")
    return np.array(x, dtype=object)


def _describe(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} features" if len(shape) == 1 else f"shape {list(shape)}"


# --- the model behind the endpoints ---------------------------------------------------------------------
class Predictor:
    """Runs ``model.predict`` on one thread; with ``batch_wait_ms`` set, merges requests that arrive together.

    Without batching each request is one forward pass, in arrival order. With batching, the requests queued
    while a pass runs, plus those arriving within ``batch_wait_ms`` of the first, go through one pass of at
    most ``MAX_BATCH`` samples (``batch_wait_ms=0``: only those already waiting).
    """

    def __init__(self, model: Any, batch_wait_ms: float | None = None):
        self.model, self.wait = model, None if batch_wait_ms is None else batch_wait_ms / 1000
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="dnntune-predict")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.wait is not None:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._batches())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def predict(self, x: np.ndarray):
        if self.queue is None:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.model.predict, x)
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((x, fut))
        return await fut

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n, deadline = len(items[0][0]), loop.time() + self.wait
            while n < MAX_BATCH:
                if self.queue.empty():
                    if deadline - loop.time() <= 0:
                        break
                    try:
                        items.append(await asyncio.wait_for(self.queue.get(), deadline - loop.time()))
                    except asyncio.TimeoutError:
                        break
                else:
                    items.append(self.queue.get_nowait())
                n += len(items[-1][0])
            xs = [x for x, _ in items]
            try:
                pred = await loop.run_in_executor(self.executor, self.model.predict, np.concatenate(xs))
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            start = 0
            for x, fut in items:
                if not fut.done():
                    fut.set_result(_slice(pred, start, start + len(x)))
                start += len(x)


def _slice(pred, i: int, j: int):
    from ..data.preprocess import Prediction

    def cut(v):
        return None if v is None else v[i:j]

    return Prediction(outputs=cut(pred.outputs), indices=cut(pred.indices),
                      labels=None if pred.labels is None else pred.labels[i:j],
                      probabilities=cut(pred.probabilities), values=cut(pred.values), decisions=cut(pred.decisions))


def prediction_json(pred, model_id: str) -> dict:
    """The ``/predict`` response: one entry per sample in each list."""
    out: dict[str, Any] = {"model_id": model_id, "n": len(pred)}
    if pred.decisions is not None:  # multi-label: per sample the decided label names, 0/1 per label, sigmoids
        out.update(labels=[list(ls) for ls in pred.labels], decisions=pred.decisions.tolist(),
                   probabilities=pred.probabilities.tolist())
    elif pred.labels is not None:
        out.update(labels=list(pred.labels), indices=pred.indices.tolist(), probabilities=pred.probabilities.tolist())
    else:
        out["values"] = pred.values.tolist()
    return out


def metadata(model: Any, model_id: str, engine: str, extra: dict | None = None) -> dict:
    """The ``/metadata`` response: model id, task, input schema, class names, recipe, metrics, versions.

    ``extra`` fills ``recipe``, ``metrics`` and ``trained`` where the model has none (an ONNX model).
    """
    import platform

    from .. import __version__

    pre = getattr(model, "preprocessing", None)
    recipe, summary = getattr(model, "recipe", None), getattr(model, "summary", None) or {}
    from importlib.metadata import PackageNotFoundError, version

    versions = {"dnntune": __version__, "python": platform.python_version()}
    for dist in ("torch", "onnxruntime", "fastapi", "uvicorn"):
        if dist in sys.modules or dist in ("fastapi", "uvicorn"):  # the engine's library, and the server's
            try:
                versions[dist] = version(dist)
            except PackageNotFoundError:
                versions[dist] = getattr(sys.modules.get(dist), "__version__", "unknown")
    out = {
        "model_id": model_id, "engine": engine, "task": model.task, "class_names": model.class_names,
        "input": {"shape": list(model.input_shape), "kind": getattr(pre, "kind", None),
                  "dataset": getattr(pre, "dataset", None), "feature_names": getattr(pre, "feature_names", None),
                  "description": pre.describe_input() if hasattr(pre, "describe_input") else None},
        "recipe": recipe.to_dict() if hasattr(recipe, "to_dict") else recipe,
        "metrics": summary.get("metrics"), "trained": summary.get("env"), "versions": versions,
    }
    for key, value in (extra or {}).items():
        if out.get(key) is None:
            out[key] = value
    return out


# --- the app ---------------------------------------------------------------------------------------------
def _host_of(header: str) -> str:
    return header[1:header.find("]")] if header.startswith("[") else header.rsplit(":", 1)[0]


def create_app(model: Any, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               batch_wait_ms: float | None = 0.0, model_id: str = "model", engine: str = "torch",
               allowed_hosts: set[str] | None = None, metadata_extra: dict | None = None):
    """The FastAPI app serving ``model`` (a LoadedRun, an OnnxRun, or anything with the same ``predict``).

    Args:
        model: has ``predict(inputs) -> Prediction``, ``input_shape``, ``task`` and ``class_names``.
        token: when set, ``/predict`` and ``/metadata`` require ``Authorization: Bearer TOKEN`` (401 otherwise);
            ``/health`` stays open.
        max_body_bytes: larger request bodies get 413, checked on ``Content-Length`` and while reading.
        batch_wait_ms: dynamic batching (see :class:`Predictor`); None: one forward pass per request.
        model_id: returned with every prediction (``_serve.model_id``: run folder name @ weights hash).
        engine: named in ``/metadata``.
        allowed_hosts: when set, requests whose ``Host`` header names another host get 400 (a page in a
            browser cannot reach a loopback server through DNS rebinding).
        metadata_extra: ``recipe``, ``metrics``, ``trained`` for ``/metadata`` when the model has none.
    """
    # imported here, not at the top: fastapi is the optional `deploy` extra. This module has no
    # `from __future__ import annotations`, so FastAPI sees the real `Request` class in the handlers' annotations
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    predictor = Predictor(model, batch_wait_ms)
    feature_names = getattr(getattr(model, "preprocessing", None), "feature_names", None)
    raw_cells = getattr(getattr(model, "preprocessing", None), "featurizer", None) is not None  # its encoder reads
    shape = tuple(model.input_shape)
    texts = getattr(getattr(model, "preprocessing", None), "featurizer", None) is not None and \
        model.preprocessing.kind == "sequence"  # a text run with its tokenizer: requests send strings
    meta = json.dumps(metadata(model, model_id, engine, metadata_extra)).encode()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await predictor.start()
        yield
        await predictor.stop()

    app = FastAPI(title="dnntune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
        if e.status == 413:  # the rest of the body is not read: close the connection instead
            headers["Connection"] = "close"
        return JSONResponse({"detail": str(e)}, status_code=e.status, headers=headers)

    def guard(request: Request, auth: bool = True) -> None:
        if allowed_hosts is not None and _host_of(request.headers.get("host", "")) not in allowed_hosts:
            raise BadRequest(400, f"Host header {request.headers.get('host', '')!r}: not allowed; this server "
                                  f"answers to {', '.join(sorted(allowed_hosts))}")
        if auth and token is not None:
            sent = request.headers.get("authorization", "")
            if not sent.startswith("Bearer "):
                raise BadRequest(401, "Authorization: missing; send the header 'Authorization: Bearer TOKEN'")
            if not hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
                raise BadRequest(401, "Authorization: wrong token")

    async def read_body(request: Request) -> bytes:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise BadRequest(415, f"Content-Type: {kind or 'missing'}; send 'Content-Type: application/json'")
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise BadRequest(400, f"Content-Length: {length[:20]!r} is not a number")
        if length is not None and int(length) > max_body_bytes:
            raise BadRequest(413, f"body: {int(length)} bytes; the limit is {max_body_bytes} (send fewer samples "
                                  f"per request, or start the server with a larger --max-body-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise BadRequest(413, f"body: over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health(request: Request):
        guard(request, auth=False)
        return {"status": "ok", "model_id": model_id}

    @app.get("/metadata")
    async def get_metadata(request: Request):
        guard(request)
        return Response(meta, media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request):
        guard(request)
        body = await read_body(request)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadRequest(400, f"body: not valid JSON ({str(e)[:80]})") from None
        if texts:
            x = parse_texts(doc)
        else:
            x = parse_inputs(doc, shape, feature_names, may_hold_bools=b"true" in body or b"false" in body,
                             raw_cells=raw_cells)
        try:
            pred = await predictor.predict(x)
        except DataError as e:
            raise BadRequest(422, str(e)) from None
        return Response(json.dumps(prediction_json(pred, model_id)), media_type="application/json")

    return app
