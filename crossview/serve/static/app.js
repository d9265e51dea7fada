"use strict";
// The page's one job: send the form to /api/locate and show the answer or the error.
(function () {
  const $ = (id) => document.getElementById(id);
  let maxBytes = 20 * 1024 * 1024;

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    $("result").hidden = true;
  }

  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "unknown" : Number(value).toFixed(digits) + (unit || "");
  }

  function render(r) {
    $("error").hidden = true;
    $("latlon").textContent = fmt(r.lat, 6) + ", " + fmt(r.lon, 6);
    $("heading").textContent = fmt(r.heading_deg, 1, "°") + " (clockwise from north" +
      (r.heading_from === "prior" ? ", from your prior)" : ")");
    $("note").textContent = r.note || "";
    $("note").hidden = !r.note;
    $("uncertainty").textContent = "± " + fmt(r.uncertainty_m, 1, " m");
    $("confidence").textContent = fmt(r.confidence, 3);
    $("method").textContent = r.method || "";
    if (r.picture_url) { $("picture").src = r.picture_url; }
    const list = $("candidates");
    list.replaceChildren();
    (r.candidates || []).forEach((c) => {
      const item = document.createElement("li");
      item.className = "candidate" + (c.chosen ? " chosen" : "");
      if (c.thumbnail_url) {
        const img = document.createElement("img");
        img.src = c.thumbnail_url;
        img.alt = "tile " + c.tile;
        item.appendChild(img);
      }
      const text = document.createElement("span");
      text.textContent = "tile " + c.tile + " — score " + fmt(c.score, 3) + " — " + fmt(c.lat, 6) + ", " +
        fmt(c.lon, 6) + (c.confidence !== undefined && c.confidence !== null ? " — confidence " +
        fmt(c.confidence, 3) : "");
      item.appendChild(text);
      list.appendChild(item);
    });
    $("result").hidden = false;
  }

  async function submit(event) {
    event.preventDefault();
    const file = $("photo").files[0];
    if (!file) { showError("Choose a photo first."); return; }
    if (file.size > maxBytes) {
      showError("The photo is too large: at most " + (maxBytes / 1048576) + " MB is accepted.");
      return;
    }
    $("submit").disabled = true;
    $("busy").hidden = false;
    try {
      const response = await fetch("/api/locate", { method: "POST", body: new FormData($("locate-form")) });
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (!response.ok || !body || body.error) {
        showError((body && body.error) || ("The server answered " + response.status + "."));
      } else {
        render(body);
      }
    } catch (e) {
      showError("Could not reach the server: " + e.message);
    } finally {
      $("submit").disabled = false;
      $("busy").hidden = true;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("locate-form").addEventListener("submit", submit);
    fetch("/api/config").then((r) => r.json()).then((c) => {
      maxBytes = c.max_bytes;
      $("max-mb").textContent = String(Math.round(maxBytes / 1048576 * 10) / 10);
    }).catch(() => {});
  });
})();
