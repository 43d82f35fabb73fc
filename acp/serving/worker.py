"""gunicorn's worker class for ACP: `gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker`."""

from uvicorn.workers import UvicornWorker as StockUvicornWorker

from acp.serving.http import PROTOCOL


class UvicornWorker(StockUvicornWorker):
    """uvicorn on uvloop (its `auto` loop), HTTP read by acp/serving/http.py's protocol (httptools, with a limit on a
    head still arriving)."""

    CONFIG_KWARGS = {**StockUvicornWorker.CONFIG_KWARGS, "http": PROTOCOL}
