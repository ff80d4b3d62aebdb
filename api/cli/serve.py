"""Subcommand ``serve``: run the HTTP API (uvicorn) over one index."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .options import add_batch_size_option, add_model_options, add_precision_option, positive_int
from ..settings import requested_model
from ..settings import API_KEY_ENV, MAX_BODY_BYTES, Settings, api_key_from_env


def add_parsers(subparsers) -> None:
    """Register ``serve`` on the ``xlsearch`` parser."""
    serve = subparsers.add_parser(
        "serve", help="serve search and live index updates over HTTP",
        description="Load the model and index once and answer JSON requests (OpenAPI docs at /docs). "
        f"When ${API_KEY_ENV} is set, writes need `Authorization: Bearer <key>`.")
    serve.add_argument("--index", required=True, metavar="DIR", help="index directory (build it with xlsearch index)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                       "0.0.0.0 listens on every interface)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--protect-reads", action="store_true",
                       help=f"require the ${API_KEY_ENV} key on reads too (search, info, documents, embed)")
    add_model_options(serve)
    add_precision_option(serve)
    add_batch_size_option(serve, "texts per forward pass when documents are added")
    serve.add_argument("--threads", type=positive_int, help="most CPU threads of one request (torch; numpy's BLAS "
                       "and FAISS are capped at it too). Default: every core for a lone request, the cores shared "
                       "between requests running at once; 1 is steadier on a machine busy with other jobs")
    serve.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2 ** 20,
                       help=f"largest request body in MiB; larger ones get 413 (default {MAX_BODY_BYTES / 2 ** 20:g})")
    serve.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(index=Path(args.index), model=requested_model(args.model),
                    device=args.device, precision=args.precision, api_key=api_key_from_env(),
                    protect_reads=args.protect_reads, batch_size=args.batch_size, threads=args.threads,
                    max_body_bytes=max(1, int(args.max_body_mb * 2 ** 20)))


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..http.app import create_app

    settings = settings_from_args(args)
    if settings.protect_reads and settings.api_key is None:
        logging.getLogger(__name__).warning("--protect-reads has no effect: %s is not set", API_KEY_ENV)
    app = create_app(settings)
    for name in ("xlsearch.api", "uvicorn.error"):  # request lines and "Uvicorn running on ..."
        logging.getLogger(name).setLevel(logging.INFO)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_config=None,
                                           access_log=False, lifespan="on"))
    # A start-up failure xlsearch explains itself (below) is not repeated as a traceback.
    quiet_failure = _StartupFailureFilter(app)
    logging.getLogger("uvicorn.error").addFilter(quiet_failure)
    try:
        server.run()
    except SystemExit:  # uvicorn exits 3 when start-up fails
        if app.state.startup_error is None:
            raise
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet_failure)
    if app.state.startup_error is not None:
        raise app.state.startup_error
    return 0 if server.started else 1


class _StartupFailureFilter(logging.Filter):
    def __init__(self, app):
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return self.app.state.startup_error is None
