"""``dnntune serve``: a real server in a subprocess on a free loopback port, queried over HTTP (http.client)."""

import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="dnntune serve needs the deploy extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="dnntune serve needs the deploy extra (fastapi, uvicorn)")

from dnntune import __version__, load_run, train, validate_recipe  # noqa: E402
from dnntune.cli import main  # noqa: E402

TOKEN = "test-token-0123456789"
LIMIT = 65536  # --max-body-bytes of the main server
READY_S = 120  # a loaded 2-core machine takes a while to import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m dnntune serve RUN_DIR ARGS`` in a subprocess, output in a log file."""

    def __init__(self, run_dir, log: Path, *args, env=None, token=None):
        self.port, self.log = _free_port(), log
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}  # sent unless a test says otherwise
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "dnntune", "serve", str(run_dir), "--port",
                                          str(self.port), *args], stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if self.request("GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready after {READY_S} s:\n{self.log.read_text()}")

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, parsed JSON body, response headers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            hdrs = {**self.auth, **({"Content-Type": "application/json"} if body is not None else {})}
            conn.request(method, path, body=body, headers={**hdrs, **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None, dict(resp.getheaders())
        finally:
            conn.close()

    def predict(self, inputs, headers=None):
        return self.request("POST", "/predict", {"inputs": inputs}, headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run trained on iris as a CSV file with string labels and named feature columns."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    folder = tmp_path_factory.mktemp("serve")
    path = folder / "iris.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for x, y in zip(iris.data, iris.target):
            w.writerow([*x, iris.target_names[y]])
    recipe = validate_recipe({"data": {"name": "csv", "path": str(path), "target": "species"},
                              "model": {"family": "mlp", "width": 16, "depth": 1}, "train": {"epochs": 2}})
    train(recipe, out_dir=folder / "run")
    return folder / "run"


def _has_onnx() -> bool:
    try:
        from dnntune.deploy import load_onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def fleet(run_dir, tmp_path_factory):
    """Servers started together (a loaded 2-core machine takes seconds to import torch in each): ``main`` with
    a token (from DNNTUNE_TOKEN, sent by its client unless a test says otherwise), a small body limit and
    batches gathered for 5 ms; ``stop``, without batching, stopped by the SIGTERM test (the last of the
    module); ``onnx`` (--engine onnxruntime, default batching) where ONNX export exists."""
    logs = tmp_path_factory.mktemp("logs")
    servers = {"main": Server(run_dir, logs / "main.log", "--max-body-bytes", str(LIMIT), "--batch-wait-ms", "5",
                              env={"DNNTUNE_TOKEN": TOKEN}, token=TOKEN),
               "stop": Server(run_dir, logs / "stop.log", "--batch-wait-ms", "off")}
    try:
        if _has_onnx():  # exported while the others start
            from dnntune.deploy import export

            export(run_dir, format="onnx")
            servers["onnx"] = Server(run_dir, logs / "onnx.log", "--engine", "onnxruntime")
        for s in servers.values():
            s.wait_ready()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def samples():
    from sklearn.datasets import load_iris

    return load_iris().data[::7]  # 22 raw samples, all three species


def _assert_same(body, expected, n, exact=True):
    assert body["n"] == n
    assert body["labels"] == expected.labels
    assert body["indices"] == expected.indices.tolist()
    got = np.asarray(body["probabilities"], dtype=np.float32)
    if exact:  # float32 → JSON → float32 loses nothing
        assert np.array_equal(got, expected.probabilities)
    else:
        np.testing.assert_allclose(got, expected.probabilities, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("server", ["main", "stop"])  # batching on, off
def test_predictions_are_those_of_load_run(fleet, loaded, samples, run_dir, server):
    status, body, _ = fleet[server].predict(samples.tolist())
    assert status == 200
    _assert_same(body, loaded.predict(samples), len(samples))
    assert set(body["labels"]) == {"setosa", "versicolor", "virginica"}  # the user's own label names
    assert body["model_id"].startswith(f"{run_dir.name}@") and len(body["model_id"].split("@")[1]) == 12
    status, one, _ = fleet[server].predict(samples[3].tolist())  # one sample without a batch dimension
    assert status == 200
    _assert_same(one, loaded.predict(samples[3:4]), 1)


def test_requests_batched_together_each_get_their_own_predictions(fleet, loaded, samples):
    from concurrent.futures import ThreadPoolExecutor

    batches = [samples[i:i + 1 + i % 3] for i in range(len(samples) - 3)]  # 1 to 3 samples each
    with ThreadPoolExecutor(len(batches)) as pool:  # all at once: the server merges them into few passes
        answers = list(pool.map(lambda b: fleet["main"].predict(b.tolist()), batches))
    for b, (status, body, _) in zip(batches, answers):
        assert status == 200  # merged with others, a sample's float32 sums may round differently (last bit)
        _assert_same(body, loaded.predict(b), len(b), exact=False)


def test_samples_keyed_by_feature_name_in_any_order(fleet, loaded, samples):
    names = getattr(loaded.preprocessing, "feature_names", None)
    if not names:
        pytest.skip("this dnntune's preprocessing records no feature_names")
    rows = [dict(reversed(list(zip(names, map(float, x))))) for x in samples]
    status, body, _ = fleet["main"].predict(rows)
    assert status == 200
    _assert_same(body, loaded.predict(samples), len(samples))
    status, body, _ = fleet["main"].predict({n: v for n, v in rows[0].items() if n != names[1]})
    assert status == 422 and f"missing feature(s) {names[1]}" in body["detail"]
    status, body, _ = fleet["main"].predict([{**rows[0], "colour": 1.0}])
    assert status == 422 and "unknown feature(s) colour" in body["detail"]


GOOD = [5.1, 3.5, 1.4, 0.2]
BAD_REQUESTS = {  # name: (body bytes, extra headers, status, words the message must hold)
    "not JSON": (b'{"inputs": [1, 2', {}, 400, "not valid JSON"),
    "too deeply nested JSON": (b"[" * 30000 + b"]" * 30000, {}, 400, "not valid JSON"),
    "not an object": (b"[5.1, 3.5, 1.4, 0.2]", {}, 422, "expected a JSON object"),
    "missing field": (b"{}", {}, 422, "inputs: missing field"),
    "unknown field": (json.dumps({"inputs": GOOD, "model": "x"}).encode(), {}, 422, "unknown field(s) 'model'"),
    "wrong feature count": (b'{"inputs": [[1, 2, 3]]}', {}, 422, "expected one sample of 4 features"),
    "wrong shape": (b'{"inputs": [[[1, 2, 3, 4]]]}', {}, 422, "got shape [1, 1, 4]"),
    "ragged": (b'{"inputs": [[1, 2, 3, 4], [1, 2]]}', {}, 422, "unequal lengths"),
    "empty": (b'{"inputs": []}', {}, 422, "non-empty list"),
    "string value": (b'{"inputs": [[1, 2, 3, 4], [1, "2", 3, 4]]}', {}, 422, 'inputs[1][1]: "2" is not a number'),
    "boolean value": (b'{"inputs": [[1, true, 3, 4]]}', {}, 422, "inputs[0][1]: true is not a number"),
    "null value": (b'{"inputs": [1, 2, null, 4]}', {}, 422, "inputs[2]: null is not a number"),
    "NaN": (b'{"inputs": [[1, 2, 3, 4], [1, NaN, 3, 4]]}', {}, 422, "inputs[1][1]: NaN/inf"),
    "huge number": (b'{"inputs": [1e999, 2, 3, 4]}', {}, 422, "NaN/inf"),
    "not JSON content type": (json.dumps({"inputs": GOOD}).encode(), {"Content-Type": "text/plain"}, 415,
                              "application/json"),
    "body over the limit": (json.dumps({"inputs": [GOOD] * 4000}).encode(), {}, 413, f"limit is {LIMIT}"),
    "foreign Host header": (json.dumps({"inputs": GOOD}).encode(), {"Host": "evil.example"}, 400, "Host header"),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving(fleet, loaded, kind):
    body, headers, status, words = BAD_REQUESTS[kind]
    got, answer, _ = fleet["main"].request("POST", "/predict", body, headers)
    assert (got, words in answer["detail"]) == (status, True), answer
    got, answer, _ = fleet["main"].predict(GOOD)
    assert got == 200 and answer["labels"] == loaded.predict([GOOD]).labels


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(fleet):
    sock = socket.create_connection(("127.0.0.1", fleet["main"].port), timeout=30)
    try:  # headers announcing 1 GB, and no body at all: the answer must not wait for it
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer %s\r\nContent-Length: 1000000000\r\n\r\n" % TOKEN.encode())
        status, answer = _read_response(sock)
    finally:
        sock.close()
    assert status == 413 and "1000000000 bytes" in answer["detail"]
    assert fleet["main"].predict(GOOD)[0] == 200


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(fleet):
    chunk = json.dumps([GOOD] * 100).encode()
    conn = http.client.HTTPConnection("127.0.0.1", fleet["main"].port, timeout=30)
    try:  # no Content-Length: the server counts the bytes as they come
        try:
            conn.request("POST", "/predict", body=iter([b'{"inputs": ', *[chunk] * (LIMIT // len(chunk) + 2)]),
                         headers={"Content-Type": "application/json", **fleet["main"].auth}, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered 413 and closed while the rest of the body was still being sent
        resp = conn.getresponse()  # the answer it sent before closing is read all the same
        assert resp.status == 413 and "over the limit" in json.loads(resp.read())["detail"]
    finally:
        conn.close()
    assert fleet["main"].predict(GOOD)[0] == 200


def test_the_token_is_required_on_predict_and_metadata_when_set(fleet):
    s = fleet["main"]
    s_auth, s.auth = s.auth, {}
    try:
        status, body, headers = s.predict(GOOD)
        assert status == 401 and "Authorization: missing" in body["detail"]
        assert headers["www-authenticate"] == "Bearer"
        assert s.predict(GOOD, {"Authorization": "Bearer not-the-token"})[0] == 401
        assert s.predict(GOOD, {"Authorization": TOKEN})[0] == 401  # the scheme is part of it
        assert s.request("GET", "/metadata")[0] == 401
        assert s.request("GET", "/health")[0] == 200  # for load balancers: says nothing about the model
        assert s.predict(GOOD, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert s.request("GET", "/metadata", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        s.auth = s_auth
    assert fleet["stop"].auth == {} and fleet["stop"].predict(GOOD)[0] == 200  # no token set: none needed


def test_health_and_metadata_describe_the_model(fleet, loaded, run_dir):
    status, health, _ = fleet["main"].request("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, meta, _ = fleet["main"].request("GET", "/metadata")
    assert status == 200
    assert meta["model_id"] == health["model_id"] == fleet["main"].predict(GOOD)[1]["model_id"]
    assert meta["task"] == "classification" and meta["class_names"] == ["setosa", "versicolor", "virginica"]
    assert meta["input"]["shape"] == [4] and meta["input"]["kind"] == "tabular"
    assert meta["metrics"] == json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert meta["recipe"]["model"] == {**loaded.recipe.to_dict()["model"]} and meta["recipe"]["model"]["width"] == 16
    assert meta["versions"]["dnntune"] == __version__ and {"torch", "fastapi", "uvicorn"} <= set(meta["versions"])
    assert meta["engine"] == "torch"


def _read_response(sock) -> tuple[int, dict | bytes]:
    """Status and JSON body (or the raw bytes if not JSON) of a response read until the server closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), json.loads(body)
    except ValueError:
        return int(head.split()[1]), body


def test_bad_serve_arguments_exit_2_with_a_message(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DNNTUNE_TOKEN", raising=False)
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "nope: no such run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a dnntune run folder" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--host", "0.0.0.0"]) == 2  # reachable from other machines
    err = capsys.readouterr().err
    assert "host: 0.0.0.0" in err and "--token" in err and "DNNTUNE_TOKEN" in err
    assert main(["serve", str(run_dir), "--token", "short"]) == 2
    assert "token: at least 8 characters" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--port", "70000"]) == 2
    assert "port: 70000" in capsys.readouterr().err
    assert main(["serve", str(run_dir), "--threads", "0"]) == 2
    assert "threads: 0; allowed: a whole number from 1" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(run_dir), "--port", str(busy.getsockname()[1])]) == 2
        assert "another program listens there" in capsys.readouterr().err


def test_the_onnxruntime_engine_serves_the_exported_model(fleet, run_dir, capsys):
    if "onnx" not in fleet:
        assert main(["serve", str(run_dir), "--engine", "onnxruntime"]) == 2
        assert "onnxruntime needs dnntune.deploy.load_onnx" in capsys.readouterr().err
        pytest.skip("dnntune.deploy.load_onnx is not there: the clear error is checked, ONNX serving is not")
    from sklearn.datasets import load_iris

    from dnntune.deploy import load_onnx

    x = load_iris().data[::5]
    status, body, _ = fleet["onnx"].predict(x.tolist())
    assert status == 200
    _assert_same(body, load_onnx(run_dir).predict(x), len(x))
    assert fleet["onnx"].predict([[1, "x", 3, 4]])[0] == 422
    meta = fleet["onnx"].request("GET", "/metadata")[1]
    assert meta["engine"] == "onnxruntime" and "onnxruntime" in meta["versions"]
    assert meta["model_id"] == fleet["main"].request("GET", "/health")[1]["model_id"]  # the same weights
    assert meta["metrics"] == json.loads((run_dir / "summary.json").read_text())["metrics"]


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(fleet, loaded):
    s = fleet["stop"]
    body = json.dumps({"inputs": [GOOD]}).encode()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:  # a request in flight: headers and half the body sent
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.2)  # let the server see the request start (an idle connection would just be closed)
        s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # shutting down: new connections are refused
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the server still accepts connections 30 s after SIGTERM")
        time.sleep(1.0)  # the request stays in flight well past the start of the shutdown
        assert s.proc.poll() is None  # still waiting for our request
        sock.sendall(body[10:])
        status, answer = _read_response(sock)
    finally:
        sock.close()
    assert status == 200 and answer["labels"] == loaded.predict([GOOD]).labels
    assert s.proc.wait(30) == 0
    log = s.log.read_text()
    assert "Traceback" not in log and "Finished server process" in log
