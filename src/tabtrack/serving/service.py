"""`tabtrack serve`: a FastAPI service around one model, loaded once at start-up.

Every prediction names the model version and run id (body and headers) and its request id (the client's
`X-Request-Id`, else a new one), so any answer traces back to its data and code, and its rows go to the prediction
log (serving/prediction_log.py) that `tabtrack monitor` reads. Bad payloads get a 4xx with the reason, never a 500.
"""

from __future__ import annotations

import hmac
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the endpoint's annotation by name
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from tabtrack import settings
from tabtrack.errors import TabtrackError
from tabtrack.serving.challenger import Challenger
from tabtrack.serving.model import LoadedModel, load
from tabtrack.serving.prediction_log import (
    DEFAULT_LOCATION,
    PredictionLog,
    describe_log,
    new_request_id,
    opened_log,
)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000
JOB_SECONDS = 0.1  # how often each of serve's background jobs runs between requests

# One JSON scalar per cell: lists, objects and the like are rejected with a 422 naming the field.
Value = StrictInt | StrictFloat | StrictStr | StrictBool | None


SCALAR_BRANCHES = {"int", "float", "str", "bool", "none"}


class PredictRequest(BaseModel):
    records: list[dict[str, Value]] = Field(min_length=1, max_length=MAX_RECORDS)


def create_app(
    model: LoadedModel,
    prediction_log: PredictionLog | None = None,
    *,
    challenger: Challenger | None = None,
    token: str | None = None,
):
    import asyncio
    import contextlib

    import joblib
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    meta = model.metadata
    trace_headers = model.trace_headers

    @contextlib.asynccontextmanager
    async def lifespan(app):
        logs = [opened for opened in (prediction_log, challenger.log if challenger else None) if opened is not None]
        shadow = challenger.shadow if challenger is not None else None
        jobs = [shadow.step] if shadow is not None and not shadow.own_thread else []
        jobs += [opened.convert for opened in logs]
        between = asyncio.create_task(_between_requests(jobs)) if jobs else None
        yield
        if between is not None:
            between.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await between
        if shadow is not None:
            shadow.close()  # its last answers reach the log before the log closes
        for opened in logs:  # shutdown, SIGTERM included: what is queued is written
            opened.close()

    app = FastAPI(title="tabtrack model service", version="1", docs_url="/docs", lifespan=lifespan)

    if token is not None:
        expected = f"Bearer {token}".encode()

        @app.middleware("http")
        async def require_token(request: Request, call_next):  # registered first: runs after limit_body
            given = request.headers.get("authorization", "").encode()
            if request.url.path != "/health" and not hmac.compare_digest(given, expected):  # constant time
                return JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer TOKEN)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            return await call_next(request)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        if length is None and request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
            request._body = body  # replay for the endpoint
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_payload(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = first["msg"]
        if loc and loc[-1] in SCALAR_BRANCHES:  # a cell that is a list or object: say so, not which union branch failed
            loc, message = loc[:-1], "each value must be a number, string, boolean or null"
        where = ".".join(loc)
        return JSONResponse({"detail": f"{where}: {message}" if where else message}, status_code=422)

    @app.exception_handler(Exception)
    async def never_500(request: Request, exc: Exception):  # a last resort: log it, answer 422 with the reason
        log.exception("prediction failed")
        return JSONResponse({"detail": f"could not score the records: {type(exc).__name__}: {exc}"}, status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        body = {"status": "ok", "runtime": "onnx" if model.onnx is not None else "sklearn", "answers": model.answered_by,
                "prediction_log": prediction_log.stats if prediction_log is not None else None}  # fmt: skip
        if challenger is not None:
            body["challenger"] = challenger.stats
        return body

    @app.get("/metadata")
    def metadata() -> JSONResponse:
        body = {**meta, "input_columns": model.columns, "classes": model.classes}
        return JSONResponse(body, headers=trace_headers)

    # async on purpose: scoring one request takes milliseconds of CPU, so running it on the event loop
    # beats a hop to the thread pool (the GIL allows no parallelism between them anyway)
    @app.post("/predict")
    async def predict(request: PredictRequest, http: Request) -> JSONResponse:
        request_id = http.headers.get("x-request-id") or new_request_id()
        answering, answer_log, role, headers = model, prediction_log, "primary", trace_headers
        if challenger is not None and challenger.answers(request_id):  # the canary's share
            answering, answer_log, role, headers = challenger.model, challenger.log, "canary", challenger.headers
        headers = {**headers, "X-Request-Id": request_id}
        try:
            # In this thread, estimators that parallelise through joblib (a forest's n_jobs=-1) predict
            # without a thread pool: starting one per request cost a 100-tree forest 23 ms of a single
            # row's 8 ms. A service scales with --workers, one process per core, as BLAS/OpenMP do here.
            with joblib.parallel_config(backend="sequential"):
                predictions, proba = answering.score_records(request.records)
        except TabtrackError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422, headers=headers)
        if answer_log is not None:
            answer_log.record(request.records, predictions, proba, request_id=request_id, role=role)
        if challenger is not None and challenger.shadow is not None:
            challenger.shadow.submit(request.records, request_id)
        answered = answering.metadata
        body: dict[str, Any] = {
            "request_id": request_id,
            "predictions": [_plain(p) for p in predictions],
            "model": {
                "name": answered.get("name"),
                "version": answered.get("version"),
                "run_id": answered.get("run_id"),
                "uri": answering.uri,
                "role": role,
            },
        }
        if proba is not None:
            labels = [str(c) for c in answering.classes]
            body["probabilities"] = [dict(zip(labels, map(float, row), strict=True)) for row in proba]
        if answering.intervals is not None:
            body.update(interval_fields(answering, predictions, proba))
        return JSONResponse(body, headers=headers)

    return app


async def _between_requests(jobs: list) -> None:
    """serve's background work, in short turns on the event loop between requests: the shadow's answers (for a
    challenger in ONNX Runtime) and each log's rows turned into Arrow, each job every JOB_SECONDS, one job a turn.
    This Python work holds the GIL: in threads, in a turn or five a second, it stalled every request in flight;
    more often, each job's fixed cost adds up (benchmarks/README.md)."""
    import asyncio

    said = False
    while True:
        for job in jobs:
            await asyncio.sleep(JOB_SECONDS / len(jobs))
            try:
                job()
            except Exception:  # each job counts its own failures; anything else must not end the turns (said once)
                if not said:
                    log.exception("background work between requests failed")
                said = True


def interval_fields(model: LoadedModel, predictions, proba) -> dict[str, Any]:
    """The conformal interval (`lower`, `upper`) or set of each prediction, and the share of rows they hold for."""
    from tabtrack_runtime.intervals import bounds, prediction_sets

    level = {"interval_level": model.intervals["level"]}
    if model.intervals["task"] == "regression":
        lower, upper = bounds(model.intervals, predictions)
        return {
            **level,
            "intervals": [{"lower": float(a), "upper": float(b)} for a, b in zip(lower, upper, strict=True)],
        }
    return {
        **level,
        "prediction_sets": [[_plain(v) for v in s] for s in prediction_sets(model.intervals, proba, model.classes)],
    }


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def run_server(
    model_uri: str,
    *,
    host: str,
    port: int,
    tracking_uri: str | None = None,
    workers: int = 1,
    log_predictions: str | None = DEFAULT_LOCATION,
    log_sample: float = 1.0,
    shadow: str | None = None,
    canary: float | None = None,
    token: str | None = None,
    insecure: bool = False,
    runtime: str = "auto",
) -> None:
    """Load the model first (a bad URI fails here, before the server starts), then serve until stopped.
    With several workers each process loads the model once, from the same URI, and logs its own files.
    `log_predictions`: where the prediction log goes (None: nowhere). `shadow`: a challenger's URI, scoring every
    request in shadow or, with `canary`, answering that share of them. `token`: the bearer token every request but
    /health must carry; required on any host but a loopback one unless `insecure`. `runtime`: "onnx" answers with
    ONNX Runtime (the run's model_onnx, else the pipeline converted at start-up), "sklearn" with the pipeline,
    "auto" with ONNX Runtime where it can (serving/onnx_scorer.py)."""
    import os

    import uvicorn

    if token is None and not insecure and not _loopback(host):
        raise TabtrackError(
            f"--host {host} opens the model to other machines: set {settings.SERVE_TOKEN} or --token-file FILE "
            "(clients then send Authorization: Bearer TOKEN), or pass --insecure to accept that anyone can use it."
        )
    if canary is not None and shadow is None:
        raise TabtrackError("--canary needs the challenger that answers its share: add --shadow MODEL_URI.")
    with tempfile.TemporaryDirectory(prefix="tabtrack-serve-") as converted:  # models converted once, for all workers
        kept = Path(converted) if workers > 1 else None
        model = load(model_uri, tracking_uri=tracking_uri, runtime=runtime, converted_in=kept)
        other = _challenger_model(model, shadow, canary, tracking_uri=tracking_uri, runtime=runtime, converted_in=kept)
        print(f"serving {model_uri} (run {model.metadata.get('run_id')}) at http://{host}:{port}", flush=True)
        print(f"answers from {model.answered_by}", flush=True)
        if other is not None:
            how = f"answers {canary:.0%} of requests" if canary is not None else "scores every request in shadow"
            print(
                f"challenger {shadow} (run {other.metadata.get('run_id')}) {how}, from {other.answered_by}", flush=True
            )
        print(describe_log(log_predictions, log_sample), flush=True)
        if token is None and insecure and not _loopback(host):
            print(f"warning: --insecure: no token; anyone who reaches {host}:{port} can use this model", flush=True)
        if workers > 1:
            if token is not None:
                os.environ[settings.SERVE_TOKEN] = token
            os.environ[settings.SERVE_MODEL_URI] = model_uri
            os.environ[settings.SERVE_LOG] = log_predictions or ""
            os.environ[settings.SERVE_LOG_SAMPLE] = str(log_sample)
            os.environ[settings.SERVE_SHADOW] = shadow or ""
            os.environ[settings.SERVE_CANARY] = "" if canary is None else str(canary)
            os.environ[settings.SERVE_RUNTIME] = runtime
            os.environ[settings.SERVE_CONVERTED] = converted
            if tracking_uri:
                os.environ[settings.TRACKING_URI] = tracking_uri
            uvicorn.run(
                f"{__name__}:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level="warning",
                access_log=False,
            )
        else:  # (with workers, each process opens its own logs and challenger; this one only checked them)
            challenger = _challenger(other, canary, log_predictions, log_sample)
            app = _prepared_app(model, opened_log(model, log_predictions, log_sample), challenger, token)
            uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def app_from_env():
    """uvicorn's factory for worker processes."""
    import os

    runtime = os.environ.get(settings.SERVE_RUNTIME) or "auto"
    kept = Path(os.environ[settings.SERVE_CONVERTED]) if os.environ.get(settings.SERVE_CONVERTED) else None
    model = load(os.environ[settings.SERVE_MODEL_URI], runtime=runtime, converted_in=kept)
    location = os.environ.get(settings.SERVE_LOG) or None
    sample = float(os.environ.get(settings.SERVE_LOG_SAMPLE, "1"))
    canary = float(os.environ[settings.SERVE_CANARY]) if os.environ.get(settings.SERVE_CANARY) else None
    shadow = os.environ.get(settings.SERVE_SHADOW) or None
    other = _challenger_model(model, shadow, canary, runtime=runtime, converted_in=kept)
    challenger = _challenger(other, canary, location, sample)
    return _prepared_app(model, opened_log(model, location, sample), challenger, os.environ.get(settings.SERVE_TOKEN))


def _challenger_model(
    model, uri, canary, *, tracking_uri=None, runtime="auto", converted_in=None
) -> LoadedModel | None:
    """The challenger model `uri` names, checked against the champion's inputs (one line at start-up if they differ)."""
    if uri is None:
        return None
    from tabtrack.serving.challenger import check_same_inputs

    if canary is not None and not 0 < canary < 1:
        raise TabtrackError(f"--canary {canary}: give the share of requests the challenger answers, in (0, 1).")
    other = load(uri, tracking_uri=tracking_uri, runtime=runtime, converted_in=converted_in)
    check_same_inputs(model, other)
    return other


def _challenger(other: LoadedModel | None, canary, location, sample) -> Challenger | None:
    """The challenger at work in this process: its model, prediction log, and shadow thread or canary share."""
    return None if other is None else Challenger(other, opened_log(other, location, sample), canary=canary)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def serve_token(token_file: str | None) -> str | None:
    """The token `serve` requires: the file's first line, else TABTRACK_SERVE_TOKEN, else none."""
    import os
    from pathlib import Path

    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TabtrackError(f"--token-file {token_file}: cannot read it ({exc.strerror}).") from None
        if not token:
            raise TabtrackError(f"--token-file {token_file} is empty; write the token in it.")
        return token
    return os.environ.get(settings.SERVE_TOKEN) or None


def _prepared_app(model: LoadedModel, prediction_log: PredictionLog | None = None, challenger=None, token=None):
    import sklearn
    from threadpoolctl import threadpool_limits

    # Single rows gain nothing from OpenMP/BLAS threads, and idle spinning threads cost latency.
    threadpool_limits(1)
    # Inputs were checked against the signature already; skip scikit-learn's per-call re-validation.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    app = create_app(model, prediction_log, challenger=challenger, token=token)
    import gc

    # The model and the app live for the whole process: keep the collector from re-scanning them,
    # which showed up as the slowest requests' extra milliseconds.
    gc.collect()
    gc.freeze()
    return app
