// Dashboard: live event feed (server-sent events) and stream status (polled). No inline script
// (the page's Content-Security-Policy allows only scripts from /static); text is set with
// textContent, never as HTML.
"use strict";
(function () {
  const feed = document.getElementById("feed");
  const feedState = document.getElementById("feed-state");
  const showTracks = document.getElementById("show-tracks");
  const MAX_ITEMS = 60;
  const NOISY = new Set(["track_started", "track_ended"]);

  function el(tag, cls, value) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (value !== undefined) node.textContent = value;
    return node;
  }

  function who(ev) {
    if (ev.person) return ev.person;
    if (ev.kind === "stream_up") return "stream up";
    if (ev.kind === "stream_down") return "stream down";
    return ev.stranger || "unknown";
  }

  function when(iso) {
    return (iso || "").replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function addEvent(ev) {
    const item = el("li", "event kind-" + ev.kind + (NOISY.has(ev.kind) ? " noisy" : ""));
    item.dataset.person = ev.person || "";
    item.dataset.kind = ev.kind;
    item.dataset.seq = ev.seq;
    if (ev.snapshot_url) {
      const img = el("img", "thumb");
      img.src = ev.snapshot_url;
      img.alt = "";
      item.appendChild(img);
    } else {
      item.appendChild(el("span", "thumb none"));
    }
    const body = el("div", "body");
    body.appendChild(el("strong", "who", who(ev)));
    const score = typeof ev.score === "number" ? " " + ev.score.toFixed(2) : "";
    body.appendChild(el("span", "what", " " + ev.kind.replace(/_/g, " ") + score));
    const track = ev.track_id !== null && ev.track_id !== undefined ? " · track " + ev.track_id : "";
    body.appendChild(el("div", "where muted", ev.stream + track + " · " + when(ev.time)));
    item.appendChild(body);
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > MAX_ITEMS) feed.removeChild(feed.lastChild);
  }

  showTracks.addEventListener("change", function () {
    feed.classList.toggle("show-noisy", showTracks.checked);
  });

  const source = new EventSource("/api/events/stream");
  source.onopen = function () { feedState.textContent = "live"; };
  source.onerror = function () { feedState.textContent = "reconnecting…"; };
  source.onmessage = function (message) {
    try { addEvent(JSON.parse(message.data)); } catch (error) { console.error(error); }
  };
  source.addEventListener("lost", function (message) {
    feedState.textContent = "live (" + JSON.parse(message.data).lost + " events skipped: too slow)";
  });

  // A live image whose connection drops (server restart, network) is reopened after a pause.
  for (const img of document.querySelectorAll("img.live")) {
    img.addEventListener("error", function () {
      setTimeout(function () { img.src = img.dataset.src + "?t=" + Date.now(); }, 2000);
    });
  }

  function set(card, field, value) {
    const node = card.querySelector('[data-field="' + field + '"]');
    if (node) node.textContent = value;
  }

  async function refresh() {
    try {
      const response = await fetch("/api/streams", { cache: "no-store" });
      if (response.status === 401) {
        location.href = "/login?next=/";
        return;
      }
      for (const s of await response.json()) {
        const card = document.querySelector('[data-stream="' + CSS.escape(s.name) + '"]');
        if (!card) continue;
        const state = card.querySelector('[data-field="state"]');
        state.textContent = s.state;
        state.className = "state state-" + s.state;
        set(card, "fps", s.fps.toFixed(1));
        set(card, "frames", s.frames);
        set(card, "dropped", s.dropped);
        set(card, "reconnects", s.reconnects);
        set(card, "age", s.last_frame_age_s === null ? "–" : s.last_frame_age_s.toFixed(1) + " s ago");
        set(card, "reason", s.reason || "");
      }
    } catch (error) {
      console.warn("status", error);
    }
    setTimeout(refresh, 2000);
  }
  refresh();
})();
