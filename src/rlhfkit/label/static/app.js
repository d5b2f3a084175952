// The labelling page: every text is set with textContent, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const hash = new URLSearchParams(location.hash.slice(1));
  const token = hash.get("token") || "";
  const NAMES = { left: "A is better", right: "B is better", tie: "tie", skip: "skipped" };
  const KEYS = {
    a: "left", 1: "left", arrowleft: "left",
    b: "right", 2: "right", arrowright: "right",
    t: "tie", 3: "tie",
    s: "skip", 0: "skip",
  };
  const judgedHere = []; // ids judged in this tab, newest last, for Back
  let labeller = "";
  let current = null;
  let shownAt = 0;
  let busy = false;

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || "HTTP " + response.status);
    return data;
  }

  function status(text, kind) {
    $("status").textContent = text;
    $("status").className = kind || "";
  }

  function showProgress(p) {
    $("progress").textContent =
      `${labeller}: ${p.judged} judged (${p.skipped} skipped), ${p.remaining} to go, ${p.total} items`;
  }

  function render(item) {
    current = item;
    const prompt = $("prompt");
    prompt.replaceChildren();
    for (const message of item.prompt) {
      const turn = document.createElement("div");
      turn.className = "turn";
      const role = document.createElement("div");
      role.className = "role";
      role.textContent = message.role;
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = message.content;
      turn.append(role, text);
      prompt.append(turn);
    }
    $("left").textContent = item.left;
    $("right").textContent = item.right;
    $("where").textContent = `item ${item.position} of ${item.total}`;
    $("comment").value = item.judged ? item.judged.comment : "";
    $("strength").value = (item.judged && item.judged.strength) || "";
    for (const button of document.querySelectorAll("#choices button[data-choice]")) {
      button.classList.toggle("chosen", !!item.judged && item.judged.choice === button.dataset.choice);
    }
    $("work").hidden = false;
    $("done").hidden = true;
    shownAt = performance.now();
  }

  function finished() {
    current = null;
    $("work").hidden = true;
    $("done").hidden = false;
  }

  function offer(options) {
    $("strength-box").hidden = !(options && options.strength);
  }

  async function next() {
    const data = await api("GET", "/api/next?labeller=" + encodeURIComponent(labeller));
    offer(data.options);
    showProgress(data.progress);
    if (data.item) render(data.item); else finished();
  }

  async function open(itemId) {
    const query = `id=${encodeURIComponent(itemId)}&labeller=${encodeURIComponent(labeller)}`;
    const data = await api("GET", "/api/item?" + query);
    offer(data.options);
    showProgress(data.progress);
    render(data.item);
  }

  async function guarded(action) {
    if (busy) return;
    busy = true;
    for (const button of document.querySelectorAll("#choices button")) button.disabled = true;
    try {
      await action();
    } catch (error) {
      status("Not saved: " + error.message, "error");
    } finally {
      busy = false;
      for (const button of document.querySelectorAll("#choices button")) button.disabled = false;
    }
  }

  function choose(choice) {
    if (!current) return;
    const item = current;
    return guarded(async () => {
      status("Saving…", "pending");
      const seconds = Math.min((performance.now() - shownAt) / 1000, 86400);
      const body = { item_id: item.id, labeller, choice, comment: $("comment").value, seconds };
      const strength = $("strength").value;
      if (strength && !$("strength-box").hidden && (choice === "left" || choice === "right")) {
        body.strength = strength;
      }
      await api("POST", "/api/judgments", body);
      if (judgedHere[judgedHere.length - 1] !== item.id) judgedHere.push(item.id);
      status(`Saved: item ${item.position}, ${NAMES[choice]}`, "saved");
      await next();
    });
  }

  function back() {
    const index = current ? judgedHere.lastIndexOf(current.id) : judgedHere.length;
    const previous = judgedHere[(index === -1 ? judgedHere.length : index) - 1];
    if (previous === undefined) return status("Nothing to go back to in this tab.", "");
    return guarded(() => open(previous));
  }

  $("who").addEventListener("submit", (event) => {
    event.preventDefault();
    labeller = $("labeller").value.trim();
    if (!labeller) return;
    localStorage.setItem("rlhfkit-labeller", labeller);
    $("labeller").blur();
    guarded(next);
  });
  for (const button of document.querySelectorAll("#choices button[data-choice]")) {
    button.addEventListener("click", () => choose(button.dataset.choice));
  }
  $("back").addEventListener("click", back);
  $("strength").addEventListener("change", () => $("strength").blur()); // keys choose again
  $("review").addEventListener("click", back);

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || !labeller) return;
    if (event.key === "Backspace") {
      event.preventDefault();
      back();
      return;
    }
    const choice = KEYS[event.key.toLowerCase()];
    if (choice && current) {
      event.preventDefault();
      choose(choice);
    }
  });

  $("labeller").value = hash.get("labeller") || localStorage.getItem("rlhfkit-labeller") || "";
  if (!token) {
    status("No access token in the address: open the URL the server printed (…/#token=…).", "error");
  }
})();
