"""`lstmcast serve RUN`: a run behind HTTP (Starlette on uvicorn, the `serve` extra).

app.py holds the routes, answers.py the forecast's answer text, batcher.py the dynamic batching, engine.py the
model and its checks, bodies.py the request formats, auth.py the bearer token, state.py the carried state behind
POST /v1/update, metrics.py the Prometheus text, server.py the start and the shutdown.
"""
