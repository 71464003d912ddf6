"""The OpenAPI document, completed: readable operation ids, a security scheme for every credential
kind the gateway accepts (applied per operation), and the error responses each operation can
actually give, all in the one error envelope.

FastAPI generates the document from the routes; :func:`install_openapi` finishes it once, on the
first request for it. The WebSocket endpoints are described by the AsyncAPI document instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from gateway.errors import ErrorCode

ERROR_SCHEMA = "ErrorBody"
_REF = f"#/components/schemas/{ERROR_SCHEMA}"


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="Stable machine-readable code, e.g. upload_too_large.")
    message: str = Field(description="For people; may change between versions.")
    retryable: bool = Field(description="Whether the same request may succeed later (see Retry-After).")


class ErrorBody(BaseModel):
    """Every error the gateway answers, FastAPI's own (404, 405, 422) included."""

    error: ErrorDetail


def operation_id(route: APIRoute) -> str:
    """``mint_token`` -> ``mintToken``: the endpoint function's name, not FastAPI's ``mint_token_v1_tokens_post``."""
    first, *rest = route.name.split("_")
    return first + "".join(part.title() for part in rest)


_CREDENTIAL_NOTE = (
    " The same credential may instead come as `?token=` or, for telephony systems that can only be given a URL, "
    "as a path prefix: `/t/<API key>/v1/…` (OpenAPI cannot describe a credential in the path; the gateway "
    "removes both from the URL before anything logs it)."
)
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An API key (configured as its SHA-256 in GATEWAY_API_KEYS)." + _CREDENTIAL_NOTE},
    "Bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <API key>` (or HTTP Basic with the API key as the password, "
               "for systems that can send only Basic, such as jambonz's listen verb)." + _CREDENTIAL_NOTE},
    "BrowserToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                     "description": "A short-lived browser token minted by `POST /v1/tokens` (bound to the key's "
                     "name, projects, an Origin and a session length). WebSocket clients may pass it as the "
                     "subprotocol `bearer.<token>`, or in the native start message."},
    "QueryToken": {"type": "apiKey", "in": "query", "name": "token",
                   "description": "An API key or browser token as `?token=`, for clients that cannot set headers."},
    "AdminToken": {"type": "http", "scheme": "bearer",
                   "description": "`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>` for the operator endpoints under "
                   "/internal (with no admin token configured: loopback callers only)."},
}  # fmt: skip

_GENERIC: dict[int, str] = {
    400: "The Host header names a host this gateway does not serve (`invalid_host`, against DNS rebinding).",
    401: "No credential, or a wrong one (`missing_credential`, `invalid_credential`, `token_expired`, `token_reused`).",
    403: "The credential or the Origin may not do this (`forbidden`, `origin_not_allowed`, `origin_mismatch`, "
    "`project_not_allowed`).",
    404: "No such path or file (`not_found`).",
    422: "Invalid parameters or body (`invalid_parameters`); the message names each field.",
    429: "Too many failed credentials from this address (`auth_throttled`) or a key's quota; see Retry-After.",
    503: "Unavailable; see the code and Retry-After.",
}
Requirements = list[dict[str, list[str]]]
_CLIENT: Requirements = [{"ApiKey": []}, {"Bearer": []}, {"BrowserToken": []}, {"QueryToken": []}]
_KEY_ONLY: Requirements = [{"ApiKey": []}, {"Bearer": []}, {"QueryToken": []}]


def _operations(auth_required: bool, admin_token: bool) -> dict[str, tuple[Requirements, dict[int, str]]]:
    """For each operation: its security requirements and the error statuses it can answer (with what
    is particular to it; an empty string takes the generic description)."""
    client = _CLIENT if auth_required else [*_CLIENT, {}]  # auth off: a credential only brings its limits
    admin: Requirements = [{"AdminToken": []}] if admin_token else [{"AdminToken": []}, {}]
    page: dict[int, str] = {400: ""}
    body = {  # every request body outside the uploads (gateway.routes.body_limit)
        408: "The body did not arrive within GATEWAY_START_TIMEOUT_S of the request's head (`start_timeout`).",
        413: "The body is over GATEWAY_MAX_CONTROL_MESSAGE_BYTES (`message_too_big`).",
    }
    drain = {
        401: "No or a wrong admin credential (`unauthorized`).",
        422: "`budget_s` is not a number from 0 to GATEWAY_MAX_SESSION_S (`invalid_parameters`, `bad_request`).",
        **body,
    }
    if admin_token:  # a wrong admin token counts against its address like any credential (gateway.routes.ops)
        drain[429] = "Too many wrong admin tokens from this address (`auth_throttled`); see Retry-After."
    return {
        "recognize": (client, {400: "", 401: "", 403: "", 429: ""}),  # its others: gateway.upload.openapi
        "mintToken": (
            _KEY_ONLY,
            {
                400: "",
                401: "",
                422: "",
                403: "A browser token cannot mint another (`api_key_required`), or asks for projects the key may not "
                "run (`project_not_allowed`), or the Origin is not allowed.",
                429: "",
                501: "Browser tokens are not configured on this gateway (`tokens_not_configured`: no "
                "GATEWAY_TOKEN_SIGNING_KEY).",
                **body,
            },
        ),
        "drain": (admin, drain),
        "metrics": ([], {}),
        "healthz": ([], {}),
        "readyz": ([], {}),
        "swaggerUi": ([], page),
        "redoc": ([], page),
        "docsAsset": ([], {400: "", 404: ""}),
        "asyncapi": ([], page),
        "index": ([], {400: "", 404: "The demo page is off (GATEWAY_DEMO_PAGE)."}),
        "staticFile": ([], {400: "", 404: "No such file, or the demo page is off."}),
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": _REF}}}}


def _uses_validation_schema(response: dict[str, Any]) -> bool:
    return "HTTPValidationError" in str(response.get("content", ""))


def complete(document: dict[str, Any], *, auth_required: bool, admin_token: bool) -> dict[str, Any]:
    """Security schemes, per-operation security and error responses, in place; returns ``document``."""
    components = document.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    if ERROR_SCHEMA not in schemas:
        generated = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[ERROR_SCHEMA] = generated
    table = _operations(auth_required, admin_token)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            security, errors = table.get(operation["operationId"], ([], {}))
            operation["security"] = security
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for key in [k for k, r in responses.items() if _uses_validation_schema(r)]:
                del responses[key]  # FastAPI's {"detail": [...]} is never answered
            for status, description in errors.items():
                responses.setdefault(str(status), _error_response(description or _GENERIC[status]))
            if operation["operationId"] == "readyz":  # not an error: the same report, saying not_ready
                responses["503"] = {
                    "description": "Draining, or at GATEWAY_MAX_SESSIONS: not ready for new "
                    "sessions (the same report as 200)",
                    "content": responses["200"]["content"],
                }
    if "HTTPValidationError" not in str(document["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document


def install_openapi(app: FastAPI, *, auth_required: bool, admin_token: bool) -> None:
    """Serve the completed document at /openapi.json (built once, on first use)."""
    built: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not built:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
                tags=app.openapi_tags, servers=app.servers,
            )  # fmt: skip
            built.append(complete(document, auth_required=auth_required, admin_token=admin_token))
        return built[0]

    app.openapi = openapi  # type: ignore[method-assign]
