"""The alarm API's OpenAPI 3.1 description (served at /api/v1/openapi.json)."""

from __future__ import annotations

from processors.alarms import DEFAULT_CONDITIONS, OPTIONAL_LIMITS, PRIORITIES, SHARE_LIMITS, Thresholds
from processors.subscriptions import KINDS, STATES, TECHNICAL_CONDITIONS


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document() -> dict:
    conditions = list(DEFAULT_CONDITIONS) + list(TECHNICAL_CONDITIONS)
    bed = {"name": "bed", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    cond = {"name": "condition", "in": "path", "required": True, "schema": {"type": "string", "enum": conditions}}
    sub_id = {"name": "sub_id", "in": "path", "required": True, "schema": {"type": "string"}}
    common = {"401": _err("missing or unknown bearer token")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "wardstream alarm API", "version": "1",
                 "description": "Subscriptions to alarms and their acknowledgement. Tokens are scoped to wards: "
                                "another ward's beds and subscriptions answer 404."},
        "servers": [{"url": "http://127.0.0.1:6066"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/subscriptions": {
                "get": {"summary": "List the subscriptions this token can see",
                        "responses": {"200": {"description": "subscriptions", "content": {"application/json": {
                            "schema": {"type": "object", "properties": {"subscriptions": {
                                "type": "array", "items": {"$ref": "#/components/schemas/Subscription"}}}}}}},
                            **common}},
                "post": {"summary": "Create a subscription",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/SubscriptionRequest"}}}},
                         "responses": {"201": {"description": "created", "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/Subscription"}}}},
                             "400": _err("malformed request, with every reason"),
                             "403": _err("a ward this token may not see"), **common}}},
            "/api/v1/subscriptions/{sub_id}": {
                "parameters": [sub_id],
                "get": {"summary": "One subscription", "responses": {
                    "200": {"description": "the subscription", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Subscription"}}}},
                    "404": _err("no such subscription visible to this token"), **common}},
                "delete": {"summary": "Delete a subscription", "responses": {
                    "200": {"description": "deleted"}, "404": _err("no such subscription visible to this token"),
                    **common}}},
            "/api/v1/alarms": {
                "get": {"summary": "Open alarms in this token's wards, highest priority first",
                        "parameters": [{"name": "bed", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "open alarms", "content": {"application/json": {
                            "schema": {"type": "object", "properties": {
                                "alarms": {"type": "array", "items": {"$ref": "#/components/schemas/Alarm"}},
                                "complete": {"type": "boolean"}}}}}}, **common}}},
            "/api/v1/alarms/{bed}/{condition}/ack": {
                "parameters": [bed, cond],
                "post": {"summary": "Acknowledge an active alarm (silences it, stops escalation)",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "required": ["by"],
                             "properties": {"by": {"type": "string", "minLength": 1, "maxLength": 80}}}}}},
                         "responses": {"202": {"description": "accepted; the acknowledged transition follows as an event"},
                                       "400": _err("malformed request"),
                                       "404": _err("no open alarm visible to this token"),
                                       "409": _err("already acknowledged, or a monitoring_stalled alarm "
                                                   "(it resolves itself when the bed's frames partition moves)"),
                                       **common}}},
            "/api/v1/alarms/{bed}/{condition}/fhir": {
                "parameters": [bed, cond],
                "get": {"summary": "The open alarm as a FHIR DeviceAlert-shaped resource",
                        "responses": {"200": {"description": "DeviceAlert", "content": {"application/fhir+json": {}}},
                                      "404": _err("no open alarm visible to this token"), **common}}},
            "/api/v1/beds/{bed}/limits": {
                "parameters": [bed],
                "get": {"summary": "The bed's alarm limits: effective, configured for the deployment, set at run time",
                        "responses": {"200": {"description": "limits", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/BedLimits"}}}},
                            "404": _err("a bed outside this token's wards"), **common}},
                "put": {"summary": "Set the bed's alarm limits at run time ({\"limits\": {}} clears them); "
                                   "they apply from the bed's next window",
                        "requestBody": {"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["limits", "by"], "additionalProperties": False,
                            "properties": {"limits": {"$ref": "#/components/schemas/Limits"},
                                           "by": {"type": "string", "minLength": 1, "maxLength": 80}}}}}},
                        "responses": {"200": {"description": "the limits now", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/BedLimits"}}}},
                            "400": _err("malformed limits, with every reason"),
                            "404": _err("a bed outside this token's wards"), **common}}},
            "/api/v1/beds/{bed}/discharge": {
                "parameters": [bed],
                "post": {"summary": "End the patient's stay in this bed (discharge, or another patient takes it): "
                                    "its open alarms resolve, the patient's signal history is forgotten, the bed's "
                                    "run-time alarm limits, Dynamic-Deep bound and slack correction return to the "
                                    "ward's; the next window starts a new stay",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "required": ["by"], "additionalProperties": False,
                             "properties": {"by": {"type": "string", "minLength": 1, "maxLength": 80}}}}}},
                         "responses": {"202": {"description": "accepted; the resolved alarms follow as events"},
                                       "400": _err("malformed request"),
                                       "404": _err("a bed outside this token's wards"), **common}}},
            "/api/v1/beds/{bed}/fidelity": {
                "parameters": [bed],
                "get": {"summary": "The fidelity hold the bed's device is under (an alarm's or a request's), as "
                                   "the control topic says, or null",
                        "responses": {"200": {"description": "the hold", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["bed", "ward", "hold"], "properties": {
                                "bed": {"type": "integer"}, "ward": {"type": "string"},
                                "hold": {"type": ["object", "null"], "properties": {
                                    "max_level": {"type": "integer", "minimum": 0, "maximum": 7},
                                    "why": {"type": "string"}, "by": {"type": "string"},
                                    "at_ms": {"type": "integer"}}}}}}}},
                            "404": _err("a bed outside this token's wards"), **common}},
                "post": {"summary": "Ask for the bed's ECG at full fidelity: its device sends no level above "
                                    "max_level (0: raw) for the given minutes, as during the automatic hold on a "
                                    "ventricular or asystole alarm; minutes 0 withdraws it",
                         "requestBody": {"required": True, "content": {"application/json": {"schema": {
                             "type": "object", "required": ["by", "minutes"], "additionalProperties": False,
                             "properties": {"by": {"type": "string", "minLength": 1, "maxLength": 80},
                                            "minutes": {"type": "number", "minimum": 0, "maximum": 1440},
                                            "max_level": {"type": "integer", "minimum": 0, "maximum": 7,
                                                          "default": 1}}}}}},
                         "responses": {"202": {"description": "accepted; the worker that owns the bed publishes it"},
                                       "400": _err("malformed request"),
                                       "404": _err("a bed outside this token's wards"), **common}}},
            "/api/v1/stream": {
                "get": {"summary": "Server-sent events: every alarm transition in this token's wards",
                        "parameters": [{"name": "priority", "in": "query", "schema": {"type": "string"},
                                        "description": "comma-separated priorities"},
                                       {"name": "bed", "in": "query", "schema": {"type": "integer"}}],
                        "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}},
                                      **common}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Limits": {"type": "object", "additionalProperties": False, "properties": {
                    k: {"type": "integer" if f.type in (int, "int") else "number",
                        **({"minimum": 0} if k in OPTIONAL_LIMITS else {"exclusiveMinimum": 0}),
                        **({"maximum": 1} if k in SHARE_LIMITS else {})}
                    for k, f in Thresholds.__dataclass_fields__.items()}},
                "BedLimits": {"type": "object", "properties": {
                    "bed": {"type": "integer"}, "ward": {"type": "string"},
                    "effective": {"$ref": "#/components/schemas/Limits"},
                    "configured": {"$ref": "#/components/schemas/Limits"},
                    "runtime": {"type": ["object", "null"], "description": "limits, by, token, at_ms"}}},
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}},
                "Delivery": {"type": "object", "required": ["kind"], "properties": {
                    "kind": {"type": "string", "enum": list(KINDS)},
                    "url": {"type": "string", "format": "uri", "description": "webhook only"},
                    "secret": {"type": "string", "minLength": 16, "writeOnly": True,
                               "description": "webhook only: the HMAC-SHA256 key of X-Wardstream-Signature"}}},
                "SubscriptionRequest": {"type": "object", "required": ["name", "wards", "delivery"],
                                        "additionalProperties": False, "properties": {
                    "name": {"type": "string", "maxLength": 120},
                    "wards": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "beds": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "priorities": {"type": "array", "items": {"type": "string", "enum": list(PRIORITIES)}},
                    "conditions": {"type": "array", "items": {"type": "string", "enum": conditions}},
                    "events": {"type": "array", "items": {"type": "string", "enum": list(STATES)}},
                    "delivery": {"$ref": "#/components/schemas/Delivery"}}},
                "Subscription": {"allOf": [{"$ref": "#/components/schemas/SubscriptionRequest"}, {
                    "type": "object", "properties": {"id": {"type": "string"}, "owner": {"type": "string"},
                                                     "created_ms": {"type": "integer"}}}]},
                "Alarm": {"type": "object", "properties": {
                    "id": {"type": "string"}, "bed": {"type": "integer"}, "ward": {"type": "string"},
                    "condition": {"type": "string"}, "priority": {"type": "string", "enum": list(PRIORITIES)},
                    "state": {"type": "string", "enum": list(STATES)},
                    "status": {"type": "string", "enum": ["active", "acknowledged"]},
                    "t_ms": {"type": "integer"}, "onset_ms": {"type": "integer"}, "why": {"type": "string"},
                    "by": {"type": "string"}, "episode": {"type": "integer"}}},
            },
        },
    }
