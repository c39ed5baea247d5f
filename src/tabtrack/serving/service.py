"""`tabtrack serve`: a FastAPI service around one model, loaded once at start-up.

Every prediction names the model version and run id (body and headers), so any answer traces back
to its data and code. Bad payloads get a 4xx with the reason, never a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from tabtrack import settings
from tabtrack.errors import TabtrackError
from tabtrack.serving.model import LoadedModel, load

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000

# One JSON scalar per cell: lists, objects and the like are rejected with a 422 naming the field.
Value = StrictInt | StrictFloat | StrictStr | StrictBool | None


SCALAR_BRANCHES = {"int", "float", "str", "bool", "none"}


class PredictRequest(BaseModel):
    records: list[dict[str, Value]] = Field(min_length=1, max_length=MAX_RECORDS)


def create_app(model: LoadedModel):
    import joblib
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    meta = model.metadata
    trace_headers = {"X-Model-Uri": model.uri, "X-Model-Run-Id": str(meta.get("run_id") or "")}
    if meta.get("version"):
        trace_headers["X-Model-Version"] = f"{meta['name']}/{meta['version']}"
    app = FastAPI(title="tabtrack model service", version="1", docs_url="/docs")

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
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> JSONResponse:
        body = {**meta, "input_columns": model.columns, "classes": model.classes}
        return JSONResponse(body, headers=trace_headers)

    # async on purpose: scoring one request takes milliseconds of CPU, so running it on the event loop
    # beats a hop to the thread pool (the GIL allows no parallelism between them anyway)
    @app.post("/predict")
    async def predict(request: PredictRequest) -> JSONResponse:
        try:
            # In this thread, estimators that parallelise through joblib (a forest's n_jobs=-1) predict
            # without a thread pool: starting one per request cost a 100-tree forest 23 ms of a single
            # row's 8 ms. A service scales with --workers, one process per core, as BLAS/OpenMP do here.
            with joblib.parallel_config(backend="sequential"):
                predictions, proba = model.score_records(request.records)
        except TabtrackError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422, headers=trace_headers)
        body: dict[str, Any] = {
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
        return JSONResponse(body, headers=trace_headers)

    return app


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def run_server(model_uri: str, *, host: str, port: int, tracking_uri: str | None = None, workers: int = 1) -> None:
    """Load the model first (a bad URI fails here, before the server starts), then serve until stopped.
    With several workers each process loads the model once, from the same URI."""
    import os

    import uvicorn

    model = load(model_uri, tracking_uri=tracking_uri)
    print(f"serving {model_uri} (run {model.metadata.get('run_id')}) at http://{host}:{port}", flush=True)
    if workers > 1:
        os.environ[settings.SERVE_MODEL_URI] = model_uri
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
        uvicorn.run(_prepared_app(model), host=host, port=port, log_level="warning", access_log=False)


def app_from_env():
    """uvicorn's factory for worker processes."""
    import os

    return _prepared_app(load(os.environ[settings.SERVE_MODEL_URI]))


def _prepared_app(model: LoadedModel):
    import sklearn
    from threadpoolctl import threadpool_limits

    # Single rows gain nothing from OpenMP/BLAS threads, and idle spinning threads cost latency.
    threadpool_limits(1)
    # Inputs were checked against the signature already; skip scikit-learn's per-call re-validation.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    app = create_app(model.compile())
    import gc

    # The model and the app live for the whole process: keep the collector from re-scanning them,
    # which showed up as the slowest requests' extra milliseconds.
    gc.collect()
    gc.freeze()
    return app
