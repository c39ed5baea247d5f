"""`tabtrack serve`: a FastAPI service around one model, loaded once at start-up.

Every prediction names the model version and run id (body and headers) and its request id (the client's
`X-Request-Id`, else a new one), so any answer traces back to its data and code, and its rows go to the prediction
log (serving/prediction_log.py) that `tabtrack monitor` reads. Bad payloads get a 4xx with the reason, never a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the endpoint's annotation by name
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from tabtrack import settings
from tabtrack.errors import TabtrackError
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

# One JSON scalar per cell: lists, objects and the like are rejected with a 422 naming the field.
Value = StrictInt | StrictFloat | StrictStr | StrictBool | None


SCALAR_BRANCHES = {"int", "float", "str", "bool", "none"}


class PredictRequest(BaseModel):
    records: list[dict[str, Value]] = Field(min_length=1, max_length=MAX_RECORDS)


def create_app(model: LoadedModel, prediction_log: PredictionLog | None = None):
    import contextlib

    import joblib
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    meta = model.metadata
    trace_headers = {"X-Model-Uri": model.uri, "X-Model-Run-Id": str(meta.get("run_id") or "")}
    if meta.get("version"):
        trace_headers["X-Model-Version"] = f"{meta['name']}/{meta['version']}"

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if prediction_log is not None:  # shutdown, SIGTERM included: what is queued is written
            prediction_log.close()

    app = FastAPI(title="tabtrack model service", version="1", docs_url="/docs", lifespan=lifespan)

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
        return {"status": "ok", "prediction_log": prediction_log.stats if prediction_log is not None else None}

    @app.get("/metadata")
    def metadata() -> JSONResponse:
        body = {**meta, "input_columns": model.columns, "classes": model.classes}
        return JSONResponse(body, headers=trace_headers)

    # async on purpose: scoring one request takes milliseconds of CPU, so running it on the event loop
    # beats a hop to the thread pool (the GIL allows no parallelism between them anyway)
    @app.post("/predict")
    async def predict(request: PredictRequest, http: Request) -> JSONResponse:
        request_id = http.headers.get("x-request-id") or new_request_id()
        headers = {**trace_headers, "X-Request-Id": request_id}
        try:
            # In this thread, estimators that parallelise through joblib (a forest's n_jobs=-1) predict
            # without a thread pool: starting one per request cost a 100-tree forest 23 ms of a single
            # row's 8 ms. A service scales with --workers, one process per core, as BLAS/OpenMP do here.
            with joblib.parallel_config(backend="sequential"):
                predictions, proba = model.score_records(request.records)
        except TabtrackError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422, headers=headers)
        if prediction_log is not None:
            prediction_log.record(request.records, predictions, proba, request_id=request_id)
        body: dict[str, Any] = {
            "request_id": request_id,
            "predictions": [_plain(p) for p in predictions],
            "model": {
                "name": meta.get("name"),
                "version": meta.get("version"),
                "run_id": meta.get("run_id"),
                "uri": model.uri,
            },
        }
        if proba is not None:
            labels = [str(c) for c in model.classes]
            body["probabilities"] = [dict(zip(labels, map(float, row), strict=True)) for row in proba]
        if model.intervals is not None:
            body.update(interval_fields(model, predictions, proba))
        return JSONResponse(body, headers=headers)

    return app


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
) -> None:
    """Load the model first (a bad URI fails here, before the server starts), then serve until stopped.
    With several workers each process loads the model once, from the same URI, and logs its own files.
    `log_predictions`: where the prediction log goes (None: nowhere)."""
    import os

    import uvicorn

    model = load(model_uri, tracking_uri=tracking_uri)
    print(f"serving {model_uri} (run {model.metadata.get('run_id')}) at http://{host}:{port}", flush=True)
    print(describe_log(log_predictions, log_sample), flush=True)
    if workers > 1:
        os.environ[settings.SERVE_MODEL_URI] = model_uri
        os.environ[settings.SERVE_LOG] = log_predictions or ""
        os.environ[settings.SERVE_LOG_SAMPLE] = str(log_sample)
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
    else:
        app = _prepared_app(model, opened_log(model, log_predictions, log_sample))
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def app_from_env():
    """uvicorn's factory for worker processes."""
    import os

    model = load(os.environ[settings.SERVE_MODEL_URI])
    location = os.environ.get(settings.SERVE_LOG) or None
    return _prepared_app(model, opened_log(model, location, float(os.environ.get(settings.SERVE_LOG_SAMPLE, "1"))))


def _prepared_app(model: LoadedModel, prediction_log: PredictionLog | None = None):
    import sklearn
    from threadpoolctl import threadpool_limits

    # Single rows gain nothing from OpenMP/BLAS threads, and idle spinning threads cost latency.
    threadpool_limits(1)
    # Inputs were checked against the signature already; skip scikit-learn's per-call re-validation.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    app = create_app(model.compile(), prediction_log)
    import gc

    # The model and the app live for the whole process: keep the collector from re-scanning them,
    # which showed up as the slowest requests' extra milliseconds.
    gc.collect()
    gc.freeze()
    return app
