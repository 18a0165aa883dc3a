// A WebSocket whose server side is a test: what the client does with each message a server may send.

/** A WebSocket whose server side is the test: `say(message)`, `drop()`. */
export class ScriptedSocket {
  static made = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.closed = false;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    ScriptedSocket.made.push(this);
  }

  close() {
    this.closed = true;
  }

  say(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  drop() {
    this.onclose?.({ code: 1006, reason: "gone" });
  }

  static latest() {
    return ScriptedSocket.made.at(-1);
  }
}
