/**
 * Errors: every failure a call can meet is a `HeadwaterError` with a stable `code`.
 *
 * The server answers an error as `{"error": code, "message": ..., ...extra}` (the HTTP API's
 * error table); the client throws it as a `HeadwaterError` whose `code` and `status` are the
 * server's and whose extra fields (`path`, `changes`, `partition`, `offset`, `durable`, `kind`,
 * `known`, `remote_traceback`, `error_type`, `topology`, ...) are copied onto it. A few codes
 * come from the client itself, with `status` 0:
 *
 * - `unavailable`: the server could not be reached, or the connection broke (as the server's
 *   own `unavailable`: try again; an append without an idempotency key may have landed);
 * - `timeout`: no answer within the call's bound (an append may still land: retry it with the
 *   same idempotency key);
 * - `bad_response`: an answer that is not the API's JSON (a proxy's error page, say);
 * - `diff_error`: a watch received a diff that does not fit its value (it then resyncs).
 */
/** The fields of an error body that are the error itself, not extras to copy. */
const RESERVED = new Set(["error", "message", "name", "stack", "code", "status", "body", "cause"]);
export class HeadwaterError extends Error {
    /** The stable error code: `not_found`, `schema_error`, `handler_error`, `unavailable`, ... */
    code;
    /** The HTTP status of the answer, or 0 for an error found by the client. */
    status;
    /** The whole error body the server sent (`{}` for an error found by the client). */
    body;
    /** `schema_error`: where in the event or argument, e.g. `$.user_id`. */
    path;
    /** `definition_error`: the changes refused, `[{kind, name, change, needs, fix}]`. */
    changes;
    /** `not_found`: what kind of thing was not found, and the names that exist. */
    kind;
    known;
    /** `ack_timeout`, `not_confirmed`, `handler_error`: where the event is (offset null: unknown). */
    partition;
    offset;
    /** `ack_timeout`: true (do not append again); `not_confirmed`: false (append again, same key). */
    durable;
    /** `handler_error`: the topology or query that raised, its exception type and traceback. */
    topology;
    error_type;
    remote_traceback;
    constructor(code, message, status = 0, body = {}) {
        super(message);
        this.name = "HeadwaterError";
        this.code = code;
        this.status = status;
        this.body = body;
        for (const [key, value] of Object.entries(body)) {
            if (!RESERVED.has(key))
                this[key] = value;
        }
    }
    /** The error an API error body stands for (`{"error": code, "message": ...}`). */
    static fromBody(body, status) {
        const code = typeof body.error === "string" ? body.error : "bad_response";
        const message = typeof body.message === "string" ? body.message : `HTTP ${status}`;
        return new HeadwaterError(code, message, status, body);
    }
}
