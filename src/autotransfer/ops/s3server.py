"""The team stack's S3 server: moto's S3 and IAM with signatures checked, its open control API refused.

    python -m autotransfer.ops.s3server HOST PORT

moto's server mode accepts any credentials unless ``INITIAL_NO_AUTH_ACTION_COUNT`` is set:
then, once that many unauthenticated actions are spent, every S3 and IAM request must be
signed with an access key its IAM knows and allows (a wrong key: ``InvalidAccessKeyId``, a
wrong secret: ``SignatureDoesNotMatch``, unsigned: 403). The stack spends those actions on
creating its own user, key and policy (``Stack.start_s3``), so its key is the only one.

moto also serves ``/moto-api/`` to anyone: a dump of its state that includes every secret
key, and a reset that wipes every bucket. Credentials would protect nothing beside it, so
this server answers those paths with 403 and everything else through moto. ``HEALTH``
(``/autotransfer-health``, answered here, never reaching moto) says the server is up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

HEALTH = "/autotransfer-health"
CONTROL = "/moto-api"
# Unauthenticated actions moto allows before it checks signatures: create_user,
# create_access_key and put_user_policy (Stack.start_s3).
SETUP_ACTIONS = 3

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def guarded(app: Wsgi) -> Wsgi:
    """``app`` without moto's control API, with a health path."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == CONTROL or path.startswith(CONTROL + "/"):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"moto's control API is off on this server (it would reveal every key and reset every bucket)\n"]
        return app(environ, start_response)

    return serve


def main(argv: list[str] | None = None) -> None:
    host, port = argv if argv is not None else sys.argv[1:]
    # moto reads both when its settings module is imported: before the import below.
    os.environ.setdefault("INITIAL_NO_AUTH_ACTION_COUNT", str(SETUP_ACTIONS))
    os.environ["MOTO_PORT"] = port
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, int(port), guarded(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
