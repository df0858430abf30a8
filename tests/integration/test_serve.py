"""`lstmcast serve`: the routes on a real uvicorn (loopback, a free port), answers equal to `predict`, the batching,
the body limit, the token and the update locking."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")

from lstmcast import Forecaster
from lstmcast.errors import DataError
from lstmcast.serve.app import Options
from lstmcast.serve.engine import Engine
from tests.serve_fixtures import serving


@pytest.fixture(scope="module")
def tiny_run(serve_run):
    return serve_run


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """predict in the test's own thread on one core: training in this process (the session's run) set the cores
    available, and two OpenMP threads on a loaded 2-core machine made each predict ~1 s (conftest restores it)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine(tiny_run):
    return Engine(tiny_run, threads=1)


@pytest.fixture(scope="module")
def served(engine):
    with serving(engine) as s:
        yield s


@pytest.fixture(scope="module")
def history(tiny_run):
    return pd.read_csv(tiny_run.parent / "series.csv", parse_dates=["time"])


def records(frame: pd.DataFrame) -> list[dict]:
    return [{"time": str(t), "y": float(v)} for t, v in zip(frame["time"], frame["y"])]


def window_of(history: pd.DataFrame, end: int, rows: int = 30) -> pd.DataFrame:
    return history.iloc[end - rows:end].reset_index(drop=True)


def test_forecast_json_csv_and_arrow_equal_predict(served, tiny_run, history):
    fc = Forecaster.load(tiny_run)
    part = window_of(history, 250)
    expected = fc.predict(part)
    status, doc = served.post_json("/v1/forecast", {"rows": records(part)})
    assert status == 200, doc
    got = pd.DataFrame(doc["forecast"])
    assert list(got.columns) == list(expected.columns)
    assert got["time"].tolist() == expected["time"].astype(str).tolist()
    np.testing.assert_allclose(got["y"].to_numpy(), expected["y"].to_numpy(), rtol=1e-6)
    status, text = served.request("POST", "/v1/forecast", part.to_csv(index=False),
                                  {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert status == 200
    np.testing.assert_allclose(pd.read_csv(io.StringIO(text))["y"], expected["y"], rtol=1e-6)
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(part, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    status, doc = served.request("POST", "/v1/forecast", sink.getvalue().to_pybytes(),
                                 {"Content-Type": "application/vnd.apache.arrow.stream"})
    assert status == 200, doc
    np.testing.assert_allclose([r["y"] for r in doc["forecast"]], expected["y"], rtol=1e-6)


def test_malformed_json_is_400_with_where_it_broke(served):
    status, doc = served.request("POST", "/v1/forecast", '{"rows": [{"time": "2024-01-01", "y": 1,}',
                                 {"Content-Type": "application/json"})
    assert status == 400
    assert doc["error"]["type"] == "DataError" and "not valid JSON (line 1, column" in doc["error"]["message"]
    status, doc = served.post_json("/v1/forecast", [1, 2])
    assert status == 400 and '"rows" list of records' in doc["error"]["message"]
    status, doc = served.request("POST", "/v1/forecast", "x", {"Content-Type": "application/xml"})
    assert status == 415 and "text/csv" in doc["error"]["message"]


def test_wrong_columns_and_short_data_get_the_clis_message(served, tiny_run, history):
    fc = Forecaster.load(tiny_run)
    part = window_of(history, 250).rename(columns={"y": "Y"})
    with pytest.raises(DataError) as cli:
        fc.predict(part)
    status, doc = served.post_json("/v1/forecast", {"rows": [{"time": str(t), "Y": float(v)}
                                                             for t, v in zip(part["time"], part["Y"])]})
    assert status == 400
    assert doc["error"] == {"type": "DataError", "message": str(cli.value), "exit_code": 3}
    assert "did you mean 'Y'" in doc["error"]["message"]
    short = window_of(history, 250, rows=5)
    with pytest.raises(DataError) as cli:
        fc.predict(short)
    status, doc = served.post_json("/v1/forecast", {"rows": records(short)})
    assert status == 400 and doc["error"]["message"] == str(cli.value)


def test_a_20_mb_body_is_413_and_the_service_goes_on(served, history):
    big = b'{"rows": [' + b" " * (20 * 1024 * 1024) + b"]}"
    status, doc = served.request("POST", "/v1/forecast", big, {"Content-Type": "application/json"})
    assert status == 413 and "limit of 4194304" in doc["error"]["message"]
    status, _ = served.post_json("/v1/forecast", {"rows": records(window_of(history, 250))})
    assert status == 200


def test_model_health_ready_and_metrics(served):
    status, doc = served.request("GET", "/v1/model")
    assert status == 200 and (doc["window"], doc["horizon"], doc["targets"]) == (24, 6, ["y"])
    assert served.request("GET", "/healthz")[0] == 200
    assert served.request("GET", "/readyz") == (200, {"status": "ready"})
    before = served.metric("lstmcast_request_errors_total")
    served.request("POST", "/v1/forecast", "{", {"Content-Type": "application/json"})
    _, text = served.request("GET", "/metrics")
    assert 'lstmcast_requests_total{route="forecast",code="400"}' in text
    assert "lstmcast_batch_size_bucket" in text and "lstmcast_queue_depth 0" in text
    assert served.metric("lstmcast_request_errors_total") == before + 1


def test_update_of_a_window_model_is_409(served, history):
    status, doc = served.post_json("/v1/update", {"rows": records(window_of(history, 250))})
    assert status == 409 and "window model" in doc["error"]["message"]


def test_concurrent_requests_share_forwards_and_each_gets_its_own_rows(engine, tiny_run, history):
    fc = Forecaster.load(tiny_run)
    ends = list(range(200, 264, 2))  # 32 different windows, each ending elsewhere
    with serving(engine, Options(max_wait=0.05)) as s:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda e: s.post_json("/v1/forecast", {"rows": records(window_of(history, e))}),
                                    ends))
        batches, requests = s.metric("lstmcast_batch_size_count"), s.metric("lstmcast_batch_size_sum")
    assert requests == len(ends) and batches < requests  # some forward served several requests
    for end, (status, doc) in zip(ends, answers):
        assert status == 200
        expected = fc.predict(window_of(history, end))
        assert [r["time"] for r in doc["forecast"]] == expected["time"].astype(str).tolist()
        np.testing.assert_allclose([r["y"] for r in doc["forecast"]], expected["y"], rtol=1e-5)


def test_a_bearer_token_is_required_when_set(engine, history):
    token = "t" * 20
    with serving(engine, Options(token=token)) as s:
        body = {"rows": records(window_of(history, 250))}
        assert s.post_json("/v1/forecast", body)[0] == 401
        status, doc = s.post_json("/v1/forecast", body, {"Authorization": "Bearer " + "x" * 20})
        assert status == 401 and "bearer token" in doc["error"]["message"]
        assert s.request("GET", "/metrics")[0] == 401
        assert s.post_json("/v1/forecast", body, {"Authorization": f"Bearer {token}"})[0] == 200
        assert s.request("GET", "/healthz")[0] == 200  # probes stay open


class CountingState:
    """A stateful backend that records when each update ran: a slow update makes overlaps visible."""

    stateful = True

    def __init__(self):
        self.spans: list[tuple[str, float, float]] = []
        self.applied: dict[str, int] = {}
        self.snapshots: list[float] = []  # when each began

    def update(self, rows):
        t0 = time.perf_counter()
        time.sleep(0.05)
        for sid in rows["id"].astype(str).unique():
            self.applied[sid] = self.applied.get(sid, 0) + len(rows[rows["id"].astype(str) == sid])
        self.spans.append((str(rows["id"].iloc[0]), t0, time.perf_counter()))
        return {"rows": len(rows)}

    def snapshot(self):
        self.snapshots.append(time.perf_counter())


def test_concurrent_updates_of_one_series_run_one_at_a_time_and_none_is_lost(engine):
    state = CountingState()
    with serving(engine, backend=state) as s:
        def send(sid: str):
            rows = [{"time": f"2024-02-01 0{k}:00:00", "y": 1.0, "id": sid} for k in range(3)]
            return s.post_json("/v1/update", {"rows": rows})
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, ["a", "a", "a", "b"]))
    assert [a[0] for a in answers] == [200] * 4 and answers[0][1] == {"updated": {"rows": 3}}
    assert state.applied == {"a": 9, "b": 3}
    spans = sorted((t0, t1) for sid, t0, t1 in state.spans if sid == "a")
    assert all(prev[1] <= nxt[0] for prev, nxt in pairwise(spans))
    # every update is in a snapshot begun after it (updates of a and b, run meanwhile, may share one)
    assert all(any(s >= t1 for s in state.snapshots) for _, _, t1 in state.spans) and 1 <= len(state.snapshots) <= 4


def test_shutdown_drains_requests_in_flight(engine, history):
    body = {"rows": records(window_of(history, 250))}
    results = []
    with serving(engine, Options(max_wait=0.2)) as s:  # the requests wait in the queue when the stop comes
        threads = [threading.Thread(target=lambda: results.append(s.post_json("/v1/forecast", body)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(status == 200 for status, _ in results)


def test_a_request_past_the_time_out_is_503_and_a_gone_client_costs_no_forward(engine, history):
    body = json.dumps({"rows": records(window_of(history, 250))}).encode()
    with serving(engine, Options(timeout=0.05, max_wait=0.4)) as s:  # a lone request waits 0.4 s for company
        status, doc = s.post_json("/v1/forecast", json.loads(body))
        assert status == 503 and "no answer within 0.05 s" in doc["error"]["message"]
    with serving(engine, Options(max_wait=0.4)) as s:
        forwards = s.metric("lstmcast_batch_size_count")


        with socket.create_connection(("127.0.0.1", s.port)) as sock:  # sends, then hangs up at once
            sock.sendall(b"POST /v1/forecast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 10
        while s.metric('lstmcast_requests_total{route="forecast",code="499"}') < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # past max_wait: a forward would have run by now
        assert s.metric('lstmcast_requests_total{route="forecast",code="499"}') == 1
        assert s.metric("lstmcast_batch_size_count") == forwards


def test_hostile_bodies_are_4xx_never_5xx(served, tiny_run, history):
    part = window_of(history, 250)
    rows = records(part)
    fc = Forecaster.load(tiny_run)
    with pytest.raises(DataError) as cli:
        fc.predict(part, future=part)
    status, doc = served.post_json("/v1/forecast", {"rows": rows, "future": rows})
    assert status == 400 and doc["error"]["message"] == str(cli.value)  # no covariates: the future is refused
    huge = [{**r, "y": 10**400} for r in rows]
    with pytest.raises(DataError) as cli:  # D14: an integer no float holds, named with its rows
        fc.predict(pd.DataFrame(huge).assign(time=lambda d: pd.to_datetime(d["time"])))
    status, doc = served.post_json("/v1/forecast", {"rows": huge})
    assert status == 400 and doc["error"]["message"] == str(cli.value)
    assert "integers beyond the float range" in doc["error"]["message"]
    status, doc = served.request("POST", "/v1/forecast", "[" * 100_000, {"Content-Type": "application/json"})
    assert status == 400 and "nests too deeply" in doc["error"]["message"]
    status, doc = served.request("POST", "/v1/forecast", b"\xff\xfe", {"Content-Type": "text/csv"})
    assert status == 400 and "CSV body" in doc["error"]["message"]
    status, doc = served.request("POST", "/v1/forecast", b"junk",
                                 {"Content-Type": "application/vnd.apache.arrow.stream"})
    assert status == 400 and "not an Arrow IPC stream" in doc["error"]["message"]
    assert served.metric('lstmcast_requests_total{route="forecast",code="500"}') == 0


@pytest.mark.slow
def test_a_panel_models_requests_share_a_forward_even_for_the_same_series(tmp_path):
    from tests.conftest import seasonal_frame, small_config

    frames = []
    for k in range(3):
        f = seasonal_frame(200, seed=k)
        frames.append(f.assign(y=f["y"] + 5 * k, id=f"s{k}"))
    df = pd.concat(frames, ignore_index=True)
    cfg = small_config(data={"id_col": "id"}, train={"precision": "fp32", "max_epochs": 1})
    Forecaster(cfg).fit(df, progress=False).save(tmp_path / "run", outputs=False)
    fc = Forecaster.load(tmp_path / "run")
    parts = [df[df.id == f"s{k}"].iloc[end - 30:end].reset_index(drop=True) for k in range(3) for end in (150, 170)]
    parts.append(pd.concat([parts[0], parts[2]], ignore_index=True))  # one request holding two series

    def rows(p: pd.DataFrame) -> list[dict]:
        return [{"time": str(t), "y": float(v), "id": i} for t, v, i in zip(p["time"], p["y"], p["id"])]
    with serving(Engine(tmp_path / "run", threads=1), Options(max_wait=0.1)) as s:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: s.post_json("/v1/forecast", {"rows": rows(p)}), parts))
        assert s.metric("lstmcast_batch_size_count") < len(parts)
    for p, (status, doc) in zip(parts, answers):
        expected = fc.predict(p)
        got = pd.DataFrame(doc["forecast"])
        assert status == 200 and list(got.columns) == list(expected.columns)
        assert got["id"].tolist() == expected["id"].tolist()
        np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5)


def test_not_ready_until_warm_and_not_while_draining(engine):
    from lstmcast.serve.app import HttpError, Service

    svc = Service(engine, Options())
    with pytest.raises(HttpError, match="starting") as exc:
        svc.not_ready()
    assert exc.value.code == 503
    svc.ready, svc.draining = False, True
    with pytest.raises(HttpError, match="shutting down"):
        svc.not_ready()


def _bodies(history: pd.DataFrame) -> dict[str, dict]:
    """JSON bodies a client may send: clean ones and ones each check of the fast path must send elsewhere."""
    good = records(window_of(history, 250))
    longer = records(window_of(history, 280, rows=60))

    def with_(i: int, **change) -> list[dict]:
        rows = [dict(r) for r in good]
        rows[i].update(change)
        return rows
    return {"good": {"rows": good}, "longer": {"rows": longer},
            "integers": {"rows": [{"time": r["time"], "y": int(r["y"] * 100)} for r in good]},
            "extra column": {"rows": [{**r, "note": "x"} for r in good]},
            "gap": {"rows": good[:10] + good[11:]}, "unsorted": {"rows": good[1:] + good[:1]},
            "duplicated": {"rows": good[:1] + good}, "off grid": {"rows": with_(3, time=good[3]["time"][:-2] + "30")},
            "missing value": {"rows": with_(5, y=None)}, "text value": {"rows": with_(5, y="12,5")},
            "true value": {"rows": with_(5, y=True)}, "beyond float32": {"rows": with_(0, y=1e39)},
            "beyond fp16 only": {"rows": with_(0, y=7e4)},
            "zoned time": {"rows": with_(7, time=good[7]["time"] + "+02:00")},
            "date only": {"rows": [{"time": r["time"][:10], "y": r["y"]} for r in good]},
            "missing time": {"rows": with_(2, time=None)}, "number time": {"rows": with_(2, time=5)},
            "no target": {"rows": [{"time": r["time"], "Y": r["y"]} for r in good]},
            "too short": {"rows": good[-5:]}, "future given": {"rows": good, "future": good[:6]},
            "keys reordered": {"rows": [{"y": r["y"], "time": r["time"]} if i % 2 else r for i, r in enumerate(good)]},
            "a record lacks y": {"rows": [r if i != 4 else {"time": r["time"]} for i, r in enumerate(good)]},
            "a record has other keys": {"rows": [r if i != 4 else {"time": r["time"], "Y": r["y"]}
                                                 for i, r in enumerate(good)]}}


def test_json_columns_to_arrays_accept_refuse_and_forecast_as_predict(engine, tiny_run, history, monkeypatch):
    """The service's direct path from JSON columns to the model's arrays (no DataFrame) against `predict` of the
    same rows as a DataFrame: every body accepted or refused alike (same error, same message), the same forecast."""
    from lstmcast.errors import LstmcastError
    from lstmcast.serve.bodies import read_body

    fc = Forecaster.load(tiny_run)
    took_frame: list[str] = []
    frame_check = Engine.check
    monkeypatch.setattr(Engine, "check", lambda self, rows, future: took_frame.append(name) or
                        frame_check(self, rows, future))
    for name, doc in _bodies(history).items():
        tables = read_body(json.dumps(doc).encode(), "application/json", engine.meta)
        try:
            got: object = engine.forecast_many([engine.check_tables(tables)])[0]
        except LstmcastError as exc:
            got = exc
        try:
            want: object = fc.predict(tables.rows, future=tables.future) if tables.future is not None \
                else fc.predict(tables.rows)
        except LstmcastError as exc:
            want = exc
        if isinstance(want, Exception):
            assert type(got) is type(want) and str(got) == str(want), name
        else:
            assert not isinstance(got, BaseException), (name, got)
            frame = got.frame()
            assert list(frame.columns) == list(want.columns), name
            assert frame["time"].tolist() == want["time"].tolist(), name
            np.testing.assert_array_equal(frame["y"].to_numpy(), want["y"].to_numpy(), err_msg=name)
    # clean: no DataFrame built
    direct = {"good", "longer", "integers", "extra column", "beyond fp16 only", "keys reordered"}
    assert direct.isdisjoint(took_frame) and set(_bodies(history)) - direct <= set(took_frame)


def test_a_stateful_run_serves_update_and_forecast_from_its_carried_states(tmp_path):
    """Issue 24 + 25: POST /v1/update advances the carried states (written to the run folder before the
    answer), POST /v1/forecast of a stateful model applies its rows and forecasts from the new states; both
    equal the same calls in process, and a restarted service resumes from the snapshot."""
    from tests.conftest import small_config
    from tests.unit.test_stateful import FIT, _rows, _table

    cfg = small_config(data={"id_col": "id", "window": 12, "horizon": 3, "season": None},
                       model={"stateful": True, "hidden_size": 8, "num_layers": 1},
                       train={"max_epochs": 1, "max_steps_per_epoch": 2, "precision": "fp32", "accel": "eager",
                              "tbptt_steps": 8})
    table = _table()
    Forecaster(cfg).fit(_rows(table, 0, FIT), progress=False).save(tmp_path / "run", outputs=False)
    ref = Forecaster.load(tmp_path / "run")
    ref.update(_rows(table, FIT, FIT + 2), persist=False)
    ref.update(_rows(table, FIT + 2, FIT + 4, ids=("a",)), persist=False)
    expected = ref.predict_state(["a"])

    def post(s, a, b, route, ids=None):
        rows = _rows(table, a, b, ids).assign(time=lambda f: f["time"].astype(str))
        return s.post_json(route, {"rows": rows.to_dict("records")})

    with serving(Engine(tmp_path / "run", threads=1)) as s:
        status, doc = post(s, FIT, FIT + 2, "/v1/update")
        assert status == 200 and doc["updated"]["rows_applied"] == 4, doc
        status, doc = post(s, FIT + 2, FIT + 4, "/v1/forecast", ("a",))
        assert status == 200, doc
        got = pd.DataFrame(doc["forecast"])
        assert post(s, FIT, FIT + 2, "/v1/update")[1]["updated"]["rows_applied"] == 0  # repeated: a no-op
    np.testing.assert_allclose(got["y"].to_numpy(), expected["y"].to_numpy(), rtol=1e-6)
    restarted = Forecaster.load(tmp_path / "run")  # the snapshot the service wrote
    np.testing.assert_allclose(restarted.predict_state(["a"])["y"].to_numpy(), expected["y"].to_numpy(), rtol=1e-6)


def _raw(port: int, method: str, path: str, body: object = None, headers: list[tuple[str, str]] = (),
         chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One request with headers exactly as given (repeated ones too); status, headers (lower-case), body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if chunked:
            for part in body:
                conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            conn.send(b"0\r\n\r\n")
        elif body is not None:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_the_lean_forecast_route_answers_as_the_starlette_route_did(engine, history):
    """POST /v1/forecast bypasses Starlette's Request and Response: a chunked body is read whole (and refused past
    the limit while it streams), the first of repeated headers counts (as Starlette's Headers.get), the 200's
    headers are Starlette's, errors carry WWW-Authenticate as before, and other methods still get Starlette's 405."""
    token = "t" * 20
    body = json.dumps({"rows": records(window_of(history, 250))}).encode()
    json_type = [("Content-Type", "application/json")]
    good, bad = ("Authorization", f"Bearer {token}"), ("Authorization", "Bearer " + "x" * 20)
    with serving(engine, Options(token=token, max_body=len(body) + 10)) as s:
        status, head, out = _raw(s.port, "POST", "/v1/forecast", body, [*json_type, good])
        assert status == 200 and head["content-type"] == "application/json"
        assert int(head["content-length"]) == len(out) and out.startswith(b'{"forecast": [{"time": ')
        third = len(body) // 3
        chunks = [body[:third], body[third:2 * third], body[2 * third:]]
        assert _raw(s.port, "POST", "/v1/forecast", chunks, [*json_type, good], chunked=True)[2] == out
        status, _, err = _raw(s.port, "POST", "/v1/forecast", [body, b" " * 20], [*json_type, good], chunked=True)
        assert status == 413 and f"limit of {len(body) + 10}" in json.loads(err)["error"]["message"]
        assert _raw(s.port, "POST", "/v1/forecast", body, [*json_type, good, bad])[0] == 200
        status, head, err = _raw(s.port, "POST", "/v1/forecast", body, [*json_type, bad, good])
        assert status == 401 and head["www-authenticate"] == "Bearer" and head["content-type"] == "application/json"
        assert json.loads(err)["error"]["type"] == "Unauthorized"
        status, head, _ = _raw(s.port, "GET", "/v1/forecast", None, [good])
        assert status == 405 and head["allow"] == "POST"
        assert s.metric('lstmcast_requests_total{route="forecast",code="200"}') == 3
        assert s.metric('lstmcast_requests_total{route="forecast",code="401"}') == 1


def test_a_lone_request_starts_no_connection_watch_and_a_queued_one_does(engine, history, monkeypatch):
    """The watch on a request's connection (a task reading it) starts only for a request still pending a loop turn
    after it was queued: a lone request's forward has run by then."""
    import lstmcast.serve.app as app_module

    watched: list[int] = []
    watch = app_module._disconnected

    async def counted(receive):
        watched.append(1)
        await watch(receive)
    monkeypatch.setattr(app_module, "_disconnected", counted)
    body = {"rows": records(window_of(history, 250))}
    with serving(engine) as s:
        for _ in range(3):
            assert s.post_json("/v1/forecast", body)[0] == 200
        assert watched == []
    with serving(engine, Options(max_wait=0.05)) as s:  # a lone request waits for company: it is watched
        assert s.post_json("/v1/forecast", body)[0] == 200
        assert watched == [1]


def test_the_start_up_heap_is_frozen_while_serving_and_released_after(engine):
    import gc

    with serving(engine) as s:
        assert s.request("GET", "/healthz")[0] == 200
        assert gc.get_freeze_count() > 10_000  # the model, torch and pandas: out of the full collections' scans
    assert gc.get_freeze_count() == 0


@pytest.mark.slow
def test_the_stateful_load_benchmark_runs(tmp_path):
    """benchmarks/serve_load.py --stateful --smoke: a stateful run served under the three loads, 0 errors."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "serve_load.py"), "--smoke", "--stateful"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "met  0 errors, SIGTERM: exit 0" in res.stdout and "| 64 | 40 | 0 |" in res.stdout
