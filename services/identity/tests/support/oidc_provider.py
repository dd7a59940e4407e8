"""A real OpenID Connect provider for the identity service's tests.

Runs the PyPI package oidc-provider-mock (authlib underneath) on 127.0.0.1 at a free port,
with PKCE enforced: its authorization code grant is registered with authlib's CodeChallenge
extension, and every authorization request must carry an S256 code challenge. Prints the
issuer URL on one line, then serves until its standard input closes (the test ended).
"""

import sys

import flask
import oidc_provider_mock._app as provider
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge
from oidc_provider_mock._server import _threaded_server
from oidc_provider_mock._storage import Storage

# The provider stores authorization codes without their challenge; keep it beside them.
challenges: dict[str, tuple[str, str]] = {}
_store_code = Storage.store_authorization_code


def store_code(self, code):
    request = flask.request
    challenge = request.args.get("code_challenge") or request.form.get("code_challenge")
    method = request.args.get("code_challenge_method") or request.form.get("code_challenge_method")
    if challenge:
        challenges[code.code] = (challenge, method or "plain")
    return _store_code(self, code)


Storage.store_authorization_code = store_code


class RequiredCodeChallenge(CodeChallenge):
    def validate_code_challenge(self, grant, redirect_uri):
        if grant.request.payload.data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method S256 is required")
        return super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[0]

    def get_authorization_code_challenge_method(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[1]


_register = AuthorizationServer.register_grant


def register_grant(self, grant, extensions=None):
    if grant is provider.AuthorizationCodeGrant:
        extensions = list(extensions or []) + [RequiredCodeChallenge(required=True)]
    return _register(self, grant, extensions)


AuthorizationServer.register_grant = register_grant

with _threaded_server(app=provider.app(require_nonce=True), host="127.0.0.1", port=0) as server:
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    sys.stdin.read()
