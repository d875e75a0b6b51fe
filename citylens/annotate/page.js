"use strict";
// citylens annotation page. Reads its data from the JSON block, keeps answers in the
// browser's local storage, exports the CSV `citylens agree` reads. Every string from
// the study reaches the page through textContent only.
(function () {
  const data = JSON.parse(document.getElementById("citylens-data").textContent);
  const items = data.items;
  const names = data.names; // as shown
  const tokens = data.tokens; // as exported: the name, or the index where two share it
  const synonyms = data.synonyms;
  const storeKey = "citylens-annotate:" + data.id;
  const $ = (id) => document.getElementById(id);

  // ---- state: {annotator, pos, answers: {key: {labels: [..], none: bool}}, seconds: {key: s}}
  let storage = null;
  try {
    storage = window.localStorage;
    storage.setItem(storeKey + ":probe", "1");
    storage.removeItem(storeKey + ":probe");
  } catch (err) {
    storage = null;
  }
  if (!storage) $("storage-warning").hidden = false;

  function fresh() {
    return { annotator: "", pos: 0, answers: {}, seconds: {} };
  }
  let state = fresh();
  if (storage) {
    try {
      const saved = JSON.parse(storage.getItem(storeKey) || "null");
      if (saved && typeof saved === "object") state = Object.assign(fresh(), saved);
    } catch (err) {
      state = fresh();
    }
  }
  state.pos = Math.min(Math.max(0, state.pos | 0), Math.max(0, items.length - 1));

  function save() {
    if (!storage) return;
    try {
      storage.setItem(storeKey, JSON.stringify(state));
    } catch (err) {
      $("storage-warning").hidden = false;
    }
  }

  const keyOf = (it) => it.image + "|" + it.model + "|" + it.theta;
  const answered = (a) => !!a && (a.none || a.labels.length > 0);

  // ---- time spent: counted while an item is shown and the page is visible
  let shownAt = document.visibilityState === "hidden" ? null : performance.now();
  function tally() {
    if (!items.length || shownAt === null) return;
    const now = performance.now();
    const k = keyOf(items[state.pos]);
    state.seconds[k] = (state.seconds[k] || 0) + (now - shownAt) / 1000;
    shownAt = now;
  }
  function pause() {
    tally();
    shownAt = null;
    save();
  }
  function resume() {
    if (shownAt === null) shownAt = performance.now();
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") pause();
    else resume();
  });
  window.addEventListener("pagehide", pause);
  window.addEventListener("pageshow", resume);

  // ---- the vocabulary search: names first, then synonyms; prefixes before the rest
  const entries = [];
  names.forEach((n, i) => {
    if (i === 0) return;
    entries.push({ cls: i, text: n.toLowerCase(), shown: n });
    (synonyms[i] || []).forEach((s) => {
      entries.push({ cls: i, text: s.toLowerCase(), shown: n + " (" + s + ")" });
    });
  });
  function search(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    const scored = [];
    for (const e of entries) {
      const at = e.text.indexOf(q);
      if (at >= 0) scored.push([at === 0 ? 0 : 1, e.text.length, e]);
    }
    scored.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const seen = new Set();
    const out = [];
    for (const [, , e] of scored) {
      if (seen.has(e.cls)) continue;
      seen.add(e.cls);
      out.push(e);
      if (out.length === 8) break;
    }
    return out;
  }

  // ---- answering
  function current() {
    const k = keyOf(items[state.pos]);
    if (!state.answers[k]) state.answers[k] = { labels: [], none: false };
    return state.answers[k];
  }
  function say(text) {
    $("message").textContent = text;
  }
  function toggle(cls) {
    const a = current();
    a.none = false;
    const at = a.labels.indexOf(cls);
    if (at >= 0) {
      a.labels.splice(at, 1);
    } else if (a.labels.length < 2) {
      a.labels.push(cls);
    } else {
      say("At most two objects: " + names[a.labels[1]] + " was replaced by " + names[cls] + ".");
      a.labels[1] = cls;
    }
    save();
    render();
  }
  function setNone() {
    const a = current();
    a.none = !a.none;
    a.labels = [];
    save();
    render();
  }
  function go(step) {
    if (!items.length) return;
    tally();
    const to = state.pos + step;
    if (to < 0) {
      say("This is the first explanation.");
      return;
    }
    if (to >= items.length) {
      const left = items.filter((it) => !answered(state.answers[keyOf(it)])).length;
      say(left ? left + " explanation(s) not answered yet; Back to find them, or Export CSV."
               : "All " + items.length + " answered. Export CSV to save the file.");
      save();
      return;
    }
    state.pos = to;
    say("");
    save();
    render();
  }

  // ---- drawing
  function button(text, key, cls, on, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    if (key) {
      const k = document.createElement("kbd");
      k.textContent = key;
      b.appendChild(k);
      b.appendChild(document.createTextNode(" "));
    }
    b.appendChild(document.createTextNode(text));
    b.dataset.cls = String(cls);
    if (on) b.classList.add("on");
    b.addEventListener("click", onClick);
    return b;
  }
  function render() {
    const done = items.filter((it) => answered(state.answers[keyOf(it)])).length;
    $("progress").value = done;
    $("count").textContent = done + " of " + items.length + " answered";
    $("annotator").value = state.annotator || "";
    if (!items.length) {
      $("where").textContent = "This page has no explanations to annotate.";
      return;
    }
    const it = items[state.pos];
    const a = current();
    $("where").textContent = "Explanation " + (state.pos + 1) + " of " + items.length +
      " (θ = " + it.theta + ")";
    for (const id of ["photo", "photo2", "photo3"]) $(id).src = it.photo;
    $("region").src = it.region;
    $("heat").src = it.heat;
    $("region-caption").textContent = "visual explanation at θ = " + it.theta;
    const picked = $("picked");
    picked.replaceChildren();
    if (a.none) {
      picked.textContent = "Answer: none / unclear";
    } else if (!a.labels.length) {
      picked.textContent = "Not answered yet.";
    } else {
      a.labels.forEach((cls, i) => {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.textContent = (i === 0 ? "main: " : "second: ") + names[cls];
        const x = document.createElement("button");
        x.type = "button";
        x.title = "remove";
        x.textContent = "×";
        x.addEventListener("click", () => toggle(cls));
        chip.appendChild(x);
        picked.appendChild(chip);
      });
    }
    const offered = $("offered");
    offered.replaceChildren();
    if (!it.offered.length) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = "No segmenter classes for this explanation: search for the object.";
      offered.appendChild(note);
    }
    it.offered.forEach((cls, i) => {
      offered.appendChild(
        button(names[cls], i < 9 ? String(i + 1) : "", cls, a.labels.includes(cls), () => toggle(cls))
      );
    });
    $("none").classList.toggle("on", !!a.none);
    showResults();
  }
  function showResults() {
    const out = $("results");
    out.replaceChildren();
    const a = items.length ? current() : { labels: [] };
    for (const e of search($("q").value)) {
      out.appendChild(button(e.shown, "", e.cls, a.labels.includes(e.cls), () => {
        toggle(e.cls);
        $("q").value = "";
        showResults();
      }));
    }
  }

  // ---- export
  function csvField(v) {
    const s = String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function exportCsv() {
    tally();
    save();
    const who = (state.annotator || "").trim();
    const lines = [["image", "label1", "label2", "model", "theta", "annotator", "seconds_spent"]];
    for (const it of items) {
      const a = state.answers[keyOf(it)];
      if (!answered(a)) continue;
      const l1 = a.none ? "none" : tokens[a.labels[0]];
      const l2 = !a.none && a.labels.length > 1 ? tokens[a.labels[1]] : "";
      const secs = (state.seconds[keyOf(it)] || 0).toFixed(1);
      lines.push([it.image, l1, l2, it.model, it.theta, who, secs]);
    }
    if (lines.length === 1) {
      say("Nothing answered yet: nothing to export.");
      return;
    }
    const text = lines.map((row) => row.map(csvField).join(",")).join("\n") + "\n";
    const blob = new Blob([text], { type: "text/csv" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    const safe = (who || "anonymous").replace(/[^A-Za-z0-9_.-]+/g, "_");
    link.download = "annotations-" + safe + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say("Exported " + (lines.length - 1) + " answer(s)" + (who ? "" : " (no annotator name)") + ".");
  }

  // ---- events
  $("annotator").addEventListener("input", (e) => {
    state.annotator = e.target.value;
    save();
  });
  $("annotator").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      e.target.blur(); // the keys that follow answer, they do not extend the name
    }
  });
  $("restart").addEventListener("click", () => {
    if (!window.confirm("Forget every answer on this page in this browser?")) return;
    state = fresh();
    save();
    shownAt = performance.now();
    say("Started over.");
    render();
  });
  $("q").addEventListener("input", showResults);
  $("q").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      const first = search($("q").value)[0];
      if (first) {
        toggle(first.cls);
        $("q").value = "";
        showResults();
      }
    } else if (e.key === "Escape") {
      $("q").blur();
    }
  });
  $("none").addEventListener("click", setNone);
  $("back").addEventListener("click", () => go(-1));
  $("next").addEventListener("click", () => go(1));
  $("export").addEventListener("click", exportCsv);
  document.addEventListener("keydown", (e) => {
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || !items.length) return;
    // Enter on a focused button is that button's (Back, Export, a choice reached by Tab)
    if (tag === "BUTTON" && (e.key === "Enter" || e.key === " ")) return;
    if (e.repeat && (e.key === "Enter" || e.key === "Backspace")) {
      e.preventDefault(); // a held key does not skip through the page
      return;
    }
    if (/^[1-9]$/.test(e.key)) {
      const cls = items[state.pos].offered[Number(e.key) - 1];
      if (cls !== undefined) toggle(cls);
      e.preventDefault();
    } else if (e.key === "0") {
      setNone();
      e.preventDefault();
    } else if (e.key === "Enter") {
      go(1);
      e.preventDefault();
    } else if (e.key === "Backspace") {
      go(-1);
      e.preventDefault();
    } else if (e.key === "/") {
      $("q").focus();
      e.preventDefault();
    }
  });
  render();
})();
