// A real headwater server for the tests: `python -m headwater.cli serve test/app.py` on a free
// loopback port, with tokens, in a temporary data directory. HEADWATER_PYTHON names the interpreter.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SERVER_START_S = 60; // the longest a server may take to answer /api/health
export const SERVER_STOP_S = 15; // the longest it may take to exit after SIGTERM (then SIGKILL)
export const TOKENS = { admin: "s-admin", append: "s-append", read: "s-read" };

const APP = fileURLToPath(new URL("./app.py", import.meta.url));
const REPOSITORY = fileURLToPath(new URL("../../../", import.meta.url)); // so `-m headwater` is this checkout
export const PYTHON = process.env.HEADWATER_PYTHON || "python3";

export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Start a server (on `port` and `data` when given: a restart); resolves once it answers. `stop()`
 * removes the data directory if `ownsData` (by default: when this call made it).
 */
export async function startServer({ port, data, ownsData = data === undefined } = {}) {
  port ??= await freePort();
  data ??= await mkdtemp(join(tmpdir(), "headwater-js-"));
  const env = {
    ...process.env,
    HEADWATER_TOKENS: `${TOKENS.admin}=admin;${TOKENS.append}=append:game;${TOKENS.read}=read:game`,
  };
  const child = spawn(PYTHON, ["-m", "headwater.cli", "serve", APP, "--data", join(data, "data"), "--port", String(port),
    "--tasks", "2"], { cwd: REPOSITORY, env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => { stderr = (stderr + chunk).slice(-4000); });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + SERVER_START_S * 1000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}) before answering:\n${stderr}`);
    try {
      const response = await fetch(`${url}/api/health`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the server did not answer ${url}/api/health within ${SERVER_START_S} s:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url, port, data,
    /** Stop the server (SIGTERM, then SIGKILL past SERVER_STOP_S); `keepData` for a restart. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), SERVER_STOP_S * 1000);
        await exited;
        clearTimeout(timer);
      }
      if (ownsData && !keepData) await rm(data, { recursive: true, force: true });
    },
  };
}

/** Wait until `check()` is true, polling every 10 ms, for at most `timeoutS`; `what` names it in the failure. */
export async function waitFor(check, what, timeoutS = 10) {
  const deadline = Date.now() + timeoutS * 1000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutS} s for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
