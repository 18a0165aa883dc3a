// The leaderboard page: watches PState `board` of module `leaderboard` with the JavaScript client
// (served by headwater at /ui/client/) and redraws the list on every commit; the form appends a score.

import { connect } from "/ui/client/index.js";

const TOKEN_KEY = "headwater.token"; // the web UI's: a server with tokens needs one with read and append on leaderboard
const hw = connect(location.origin, { token: localStorage.getItem(TOKEN_KEY) || undefined });
const $ = (selector) => document.querySelector(selector);

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function draw(entries) {
  $("#board").innerHTML = (entries || []).map((entry) =>
    `<li data-player="${esc(entry.player)}"><span class="player">${esc(entry.player)}</span><span class="points">${entry.points}</span></li>`).join("")
    || `<li class="empty">No scores yet: add one below.</li>`;
}

function live(state, title = "") {
  const badge = $("#live");
  badge.dataset.state = state;
  badge.textContent = { live: "live", reconnecting: "reconnecting…", error: "stopped" }[state];
  badge.title = title;
}

async function watchBoard() {
  try {
    const watched = await hw.pstate("leaderboard", "board").watch({
      onChange: (diffs, value) => draw(value),
      onConnection: (connected) => live(connected ? "live" : "reconnecting"),
      onError: (error) => live("error", error.message),
    });
    draw(watched.value);
    live("live");
  } catch (error) {
    live("error", error.message);
  }
}

$("#score").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const player = $("#player").value.trim();
    const answer = await hw.depot("leaderboard", "scores").append({ player, points: Number($("#points").value) });
    $("#result").textContent = `${player} has ${answer.results.add_score} points`;
  } catch (error) {
    $("#result").textContent = `${error.code}: ${error.message}`;
  }
});

watchBoard();
