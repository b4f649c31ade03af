"""A static-token check in front of Glance, for tests: Keystone's `authtoken` without Keystone.

Glance's `unauthenticated-context` pipeline accepts any request. Berth sends `X-Auth-Token`, and must
turn Glance's 401 into a clear error, so the test deployment puts this filter before it: a request whose
X-Auth-Token is not the one in $BERTH_GLANCE_TOKEN_FILE gets the 401 Keystone's middleware would give
(same status, same JSON error shape). Everything behind it is stock Glance.
"""

import hmac
import json
import os


def filter_factory(global_conf, **local_conf):
    path = local_conf.get("token_file") or os.environ.get("BERTH_GLANCE_TOKEN_FILE", "")

    def _filter(app):
        def middleware(environ, start_response):
            with open(path, encoding="utf-8") as f:
                expected = f.read().strip()
            given = environ.get("HTTP_X_AUTH_TOKEN", "")
            path_info = environ.get("PATH_INFO", "")
            # Version discovery and the health check stay open, as with Keystone.
            if path_info in ("", "/", "/versions", "/healthcheck") or hmac.compare_digest(
                given.encode(), expected.encode()
            ):
                return app(environ, start_response)
            body = json.dumps(
                {"error": {"code": 401, "title": "Unauthorized",
                           "message": "The request you have made requires authentication."}}
            ).encode()
            start_response("401 Unauthorized", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("WWW-Authenticate", "Keystone uri='http://127.0.0.1/identity'"),
            ])
            return [body]

        return middleware

    return _filter
