/**
 * What the watch and tail sockets share: opening a socket and waiting for its first message,
 * heartbeats and the silence bound, and connecting again after a drop (waiting between tries,
 * longer each time up to `WATCH_RECONNECT_WAIT_MAX_S`) until `close()` or an error the server
 * sends ends it. A subclass says what the URL is (it may change between tries), what the first
 * message holds and what to do with the later ones.
 */
import { HeadwaterError } from "./errors.js";
/** The longest the socket may take to open and send its first message. */
export const WATCH_CONNECT_S = 10;
/** The first wait before connecting again after a drop; each failed try doubles it. */
export const WATCH_RECONNECT_WAIT_MIN_S = 0.1;
/** The longest wait between tries to connect again. */
export const WATCH_RECONNECT_WAIT_MAX_S = 5;
/** A socket silent this long is taken for dead (the server sends a heartbeat after 15 s of silence). */
export const WATCH_SILENCE_MAX_S = 45;
/** Errors that are worth connecting again for; any other error the server sends ends the socket. */
const PASSING = new Set(["unavailable", "timeout", "bad_response"]);
export class LiveSocket {
    WebSocket;
    label;
    hooks;
    /** Whether the socket is open now (false while connecting again). */
    connected = false;
    /** Whether `close()` was called or the server ended it. */
    closed = false;
    /** The error that ended it, if one did. */
    error = null;
    socket = null;
    generation = 0; // events of sockets from an older generation are ignored
    silence = null;
    wake = null; // ends the wait between tries to connect again
    cancel = null; // ends a try to connect under way
    constructor(WebSocket, label, hooks) {
        this.WebSocket = WebSocket;
        this.label = label;
        this.hooks = hooks;
    }
    /** The constructor to use, or a TypeError saying how to pass one. */
    static required(WebSocket) {
        if (!WebSocket) {
            throw new TypeError("this platform has no global WebSocket (Node before 22): pass one, e.g. "
                + "connect(url, { WebSocket }) with `import { WebSocket } from \"ws\"`");
        }
        return WebSocket;
    }
    /** Stop: the socket closes, and nothing is delivered again. */
    close() {
        this.end(null);
    }
    /** Connect for the first time; resolves with the first message's content. */
    async start() {
        const first = await this.attach();
        this.connected = true;
        return first;
    }
    connection(connected) {
        if (connected === this.connected)
            return;
        this.connected = connected;
        callBack(() => this.hooks.onConnection?.(connected));
    }
    /** Open a socket; the content of its first message, or the error it sends (or a timeout). */
    attach() {
        const generation = ++this.generation;
        return new Promise((resolve, reject) => {
            let socket;
            try {
                socket = new this.WebSocket(this.url());
            }
            catch (e) {
                reject(new HeadwaterError("unavailable", `cannot follow ${this.label}: ${e.message}`));
                return;
            }
            this.socket = socket;
            let waiting = true; // for the first message
            const fail = (error) => {
                waiting = false;
                this.cancel = null;
                clearTimeout(timer);
                this.detach(socket);
                reject(error);
            };
            this.cancel = () => fail(new HeadwaterError("unavailable", `following ${this.label}: closed while connecting`));
            const timer = setTimeout(() => fail(new HeadwaterError("timeout", `cannot follow ${this.label}: no first message within ${WATCH_CONNECT_S} s`)), WATCH_CONNECT_S * 1000);
            socket.onerror = () => { }; // a close event follows every error
            socket.onclose = (event) => {
                if (generation !== this.generation)
                    return;
                if (waiting) {
                    fail(new HeadwaterError("unavailable", `cannot follow ${this.label}: the socket closed `
                        + `(${event.code ?? ""} ${event.reason ?? ""}); is the server running?`));
                }
                else {
                    this.dropped();
                }
            };
            socket.onmessage = (event) => {
                if (generation !== this.generation)
                    return;
                const message = parse(event.data);
                if (!waiting) {
                    this.received(message);
                    return;
                }
                if (message?.type === "error") {
                    fail(HeadwaterError.fromBody(message, 0));
                    return;
                }
                let first;
                try {
                    if (!message)
                        throw new HeadwaterError("bad_response", `cannot follow ${this.label}: the first message is not JSON`);
                    first = this.first(message);
                }
                catch (e) {
                    fail(e);
                    return;
                }
                waiting = false;
                this.cancel = null;
                clearTimeout(timer);
                this.heard();
                resolve(first);
            };
        });
    }
    received(message) {
        this.heard();
        if (message?.type === "error")
            this.end(HeadwaterError.fromBody(message, 0));
        else if (message?.type === "heartbeat")
            return;
        else if (message)
            this.receive(message);
        else
            this.dropped(); // not the protocol: connect again
    }
    /** Reset the silence bound: a socket that says nothing for WATCH_SILENCE_MAX_S is taken for dead. */
    heard() {
        if (this.silence !== null)
            clearTimeout(this.silence);
        this.silence = setTimeout(() => this.dropped(), WATCH_SILENCE_MAX_S * 1000);
    }
    /** The socket dropped (or went silent, or sent what does not fit): connect again unless closed. */
    dropped() {
        this.pause();
        if (!this.closed)
            void this.reconnect();
    }
    /** Close the socket without ending: `dropped()` later connects again. */
    pause() {
        if (this.socket)
            this.detach(this.socket);
        this.connection(false);
    }
    async reconnect() {
        let waitS = WATCH_RECONNECT_WAIT_MIN_S;
        while (!this.closed) {
            await new Promise((resolve) => {
                const timer = setTimeout(resolve, waitS * 1000);
                this.wake = () => { clearTimeout(timer); resolve(); };
            });
            this.wake = null;
            if (this.closed)
                return;
            try {
                const first = await this.attach();
                if (this.closed)
                    return;
                this.connection(true);
                this.resumed(first);
                return;
            }
            catch (e) {
                const error = e;
                if (!PASSING.has(error.code)) {
                    this.end(error);
                    return;
                }
                waitS = Math.min(WATCH_RECONNECT_WAIT_MAX_S, waitS * 2);
            }
        }
    }
    detach(socket) {
        if (socket === this.socket) {
            this.generation++;
            this.socket = null;
        }
        if (this.silence !== null)
            clearTimeout(this.silence);
        this.silence = null;
        socket.onmessage = null;
        socket.onclose = null;
        try {
            socket.close();
        }
        catch {
            // closing a socket that never opened: nothing to do
        }
    }
    end(error) {
        if (this.closed)
            return;
        this.closed = true;
        this.connected = false;
        this.error = error;
        this.cancel?.();
        if (this.socket)
            this.detach(this.socket);
        this.wake?.();
        this.ended(error);
        if (error)
            this.hooks.onError?.(error);
    }
}
/** Call a caller's callback; its exception is reported where it is seen, not into the socket. */
export function callBack(fn) {
    try {
        fn();
    }
    catch (e) {
        queueMicrotask(() => { throw e; });
    }
}
function parse(data) {
    const text = typeof data === "string" ? data
        : data instanceof ArrayBuffer ? new TextDecoder().decode(data) : String(data);
    try {
        const message = JSON.parse(text);
        return message && typeof message === "object" ? message : null;
    }
    catch {
        return null;
    }
}
/** What a `for await` loop over a socket has not taken yet: handed to a waiting `next()`, or queued. */
export class Feed {
    /** Whether a loop iterates (only then are items queued). */
    iterating = false;
    pending = [];
    waiters = [];
    push(item) {
        const waiter = this.waiters.shift();
        if (waiter)
            waiter.resolve({ value: item, done: false });
        else if (this.iterating)
            this.pending.push(item);
    }
    /** An iterator over the items of `source`; leaving a loop early closes it. `taken` runs after each item is taken. */
    iterator(source, taken = () => { }) {
        this.iterating = true;
        return {
            next: () => {
                const item = this.pending.shift();
                if (item !== undefined) {
                    taken();
                    return Promise.resolve({ value: item, done: false });
                }
                if (source.error)
                    return Promise.reject(source.error);
                if (source.closed)
                    return Promise.resolve({ value: undefined, done: true });
                return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
            },
            return: () => {
                source.close();
                return Promise.resolve({ value: undefined, done: true });
            },
        };
    }
    /** The source ended: waiting loops end (or throw `error`). */
    end(error) {
        for (const waiter of this.waiters.splice(0)) {
            if (error)
                waiter.reject(error);
            else
                waiter.resolve({ value: undefined, done: true });
        }
    }
}
