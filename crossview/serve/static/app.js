"use strict";
// The page: send the form to /api/locate, show the answer (or the error) in words and on a Leaflet map of the
// index. Everything is fetched from this server (the page's security policy allows nothing else). Map
// coordinates are WGS84 lat/lon; headings are degrees clockwise from north.
(function () {
  const $ = (id) => document.getElementById(id);
  const ARROW_PX = 70; // the heading arrow's length on screen
  let maxBytes = 20 * 1024 * 1024;
  let map = null;
  let answerLayer = null;
  let candidateLayers = [];
  let arrow = null;

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    $("result").hidden = true;
  }

  function fmt(value, digits, unit) {
    return value === null || value === undefined ? "unknown" : Number(value).toFixed(digits) + (unit || "");
  }

  // --- the map -------------------------------------------------------------------------------------------
  function initMap() {
    map = L.map("map", { zoomSnap: 0.25, maxZoom: 23, worldCopyJump: false });
    map.attributionControl.setPrefix("Leaflet");
    map.setView([0, 0], 2);
    answerLayer = L.featureGroup().addTo(map);
    map.on("zoomend", drawArrow);
    fetch("/api/tiles").then((r) => r.json()).then(showIndex).catch(() => {
      $("map-caption").textContent = "The index could not be loaded.";
    });
  }

  function showIndex(layer) {
    if (!layer || !layer.count) {
      $("map-caption").textContent = "The index has no tiles to show.";
      return;
    }
    if (layer.mode === "images") {
      layer.tiles.forEach((t) => {
        L.imageOverlay(t.url, t.bounds, { className: "cv-tile", alt: "aerial tile " + t.id }).addTo(map);
      });
      $("map-caption").textContent = "The index: " + layer.count + " aerial tiles, drawn at their footprints.";
    } else {
      layer.rects.forEach((b) => {
        L.rectangle(b, { className: "cv-coverage", stroke: false, interactive: false }).addTo(map);
      });
      $("map-caption").textContent = "The index: " + layer.count + " aerial tiles; the shaded area is what they " +
        "cover (too many to draw one by one).";
    }
    if (!answerLayer.getLayers().length) { map.fitBounds(layer.bounds); }
  }

  // the heading arrow, in screen pixels (the map's projection keeps angles, so north is up on screen)
  function drawArrow() {
    if (!arrow) { return; }
    if (arrow.line) { answerLayer.removeLayer(arrow.line); }
    const h = arrow.heading * Math.PI / 180;
    const p = map.latLngToLayerPoint(arrow.at);
    const tip = p.add(L.point(Math.sin(h), -Math.cos(h)).multiplyBy(ARROW_PX));
    const barb = (turn) => {
      const a = h + Math.PI + turn;
      return map.layerPointToLatLng(tip.add(L.point(Math.sin(a), -Math.cos(a)).multiplyBy(16)));
    };
    const tipLL = map.layerPointToLatLng(tip);
    arrow.line = L.polyline([[arrow.at, tipLL], [barb(0.45), tipLL, barb(-0.45)]],
      { className: "cv-heading", interactive: false }).addTo(answerLayer);
  }

  function popupFor(c) {
    const box = document.createElement("div");
    box.className = "cv-popup";
    if (c.thumbnail_url) {
      const img = document.createElement("img");
      img.src = c.thumbnail_url;
      img.alt = "tile " + c.tile;
      box.appendChild(img);
    }
    const text = document.createElement("span");
    text.textContent = "#" + c.rank + " tile " + c.tile + (c.chosen ? " (chosen)" : "") + " — score " +
      fmt(c.score, 3);
    box.appendChild(text);
    return box;
  }

  function showOnMap(r) {
    answerLayer.clearLayers();
    candidateLayers = [];
    arrow = null;
    const items = [];
    (r.candidates || []).forEach((c, i) => {
      if (!c.footprint) { candidateLayers.push(null); return; }
      const poly = L.polygon(c.footprint, { className: "cv-candidate" + (c.chosen ? " cv-chosen" : "") })
        .bindPopup(popupFor(c), { maxWidth: 260 });
      poly.on("click", () => selectCandidate(i, false));
      poly.addTo(answerLayer);
      candidateLayers.push(poly);
      items.push(poly);
    });
    if (r.near) {
      items.push(L.circle([r.near[0], r.near[1]], { radius: r.near[2], className: "cv-near", interactive: false })
        .addTo(answerLayer));
    }
    const post = r.posterior;
    if (post && post.heat_map_url && post.bounds) {  // the posterior over the search area, as a heat map
      L.imageOverlay(post.heat_map_url, post.bounds, { className: "cv-posterior", alt: "posterior heat map",
        interactive: false }).addTo(answerLayer);
      (post.modes || []).slice(1).forEach((m) => {
        L.circleMarker([m.lat, m.lon], { radius: 7, className: "cv-mode", interactive: true })
          .bindTooltip("other mode: " + fmt(100 * m.probability, 1) + " %").addTo(answerLayer);
      });
    }
    // the compass prior: a wedge over its range
    if (r.heading_prior && (r.near || (r.lat !== null && r.lat !== undefined))) {
      const c = r.near ? [r.near[0], r.near[1]] : [r.lat, r.lon];
      const reach = r.near ? Math.min(r.near[2], 60) : 25;
      items.push(L.polygon(wedge(c, reach, r.heading_prior[0], r.heading_prior[1]),
        { className: "cv-compass", interactive: false }).addTo(answerLayer));
    }
    const u95 = r.uncertainty && r.uncertainty["95"];
    if (u95 && r.lat !== null && r.lat !== undefined) {
      L.circle([r.lat, r.lon], { radius: u95, className: "cv-uncertainty95", interactive: false }).addTo(answerLayer);
    }
    if (r.lat !== null && r.lat !== undefined) {
      const at = L.latLng(r.lat, r.lon);
      items.push(L.circle(at, { radius: Math.max(r.uncertainty_m || 0, 0.5), className: "cv-uncertainty",
        interactive: false }).addTo(answerLayer));
      L.marker(at, { title: "estimated position", alt: "estimated position", keyboard: false }).addTo(answerLayer);
      if (r.heading_deg !== null && r.heading_deg !== undefined) {
        arrow = { at: at, heading: Number(r.heading_deg), line: null };
      }
    }
    $("legend").hidden = false;
    if (items.length) {
      map.fitBounds(L.featureGroup(items).getBounds(), { padding: [30, 30], maxZoom: 21 });
    }
    drawArrow();
  }

  // lat/lon points of a wedge: the centre, then an arc of `reach` metres over heading ± halfWidth degrees
  function wedge(centre, reach, heading, halfWidth) {
    const pts = [centre];
    const m = 111320;
    for (let k = 0; k <= 16; k++) {
      const a = (heading - halfWidth + (2 * halfWidth * k) / 16) * Math.PI / 180;
      pts.push([centre[0] + reach * Math.cos(a) / m,
        centre[1] + reach * Math.sin(a) / (m * Math.cos(centre[0] * Math.PI / 180))]);
    }
    return pts;
  }

  function selectCandidate(i, openPopup) {
    document.querySelectorAll("#candidates li").forEach((li, j) => li.classList.toggle("selected", j === i));
    const poly = candidateLayers[i];
    if (poly && openPopup) {
      map.fitBounds(poly.getBounds(), { padding: [40, 40], maxZoom: 21 });
      poly.openPopup();
    }
  }

  // --- the answer in words -------------------------------------------------------------------------------
  function render(r) {
    $("error").hidden = true;
    $("latlon").textContent = fmt(r.lat, 6) + ", " + fmt(r.lon, 6);
    $("heading").textContent = fmt(r.heading_deg, 1, "°") + " (clockwise from north" +
      (r.heading_from === "prior" ? ", from your prior)" : ")");
    $("note").textContent = r.note || "";
    $("note").hidden = !r.note;
    const u = r.uncertainty || {};
    $("uncertainty").textContent = (u["68"] && u["95"])
      ? "± " + fmt(u["68"], 1, " m") + " (68 %), ± " + fmt(u["95"], 1, " m") + " (95 %)" +
        (u.calibrated ? ", calibrated" : u.from === "posterior" ? ", from the posterior" : "")
      : "± " + fmt(r.uncertainty_m, 1, " m");
    const flags = r.flags || [];
    $("flags").replaceChildren(...flags.map((f) => {
      const li = document.createElement("li");
      li.textContent = "Not a confident fix: " + f;
      return li;
    }));
    $("flags").hidden = flags.length === 0;
    const pri = r.priors || {};
    const said = [];
    if (r.near) { said.push("within " + fmt(r.near[2], 0, " m") + " of " + fmt(r.near[0], 6) + ", " +
      fmt(r.near[1], 6) + " (" + ((pri.near && pri.near.from) || "given") + ")"); }
    if (r.heading_prior) { said.push("heading " + fmt(r.heading_prior[0], 0, "°") + " ± " +
      fmt(r.heading_prior[1], 0, "°") + " (" + ((pri.heading && pri.heading.from) || "given") + ")"); }
    $("priors").textContent = said.length ? said.join("; ") : "none";
    $("confidence").textContent = fmt(r.confidence, 3);
    $("method").textContent = r.method || "";
    if (r.picture_url) { $("picture").src = r.picture_url; }
    const list = $("candidates");
    list.replaceChildren();
    (r.candidates || []).forEach((c, i) => {
      const item = document.createElement("li");
      item.className = "candidate" + (c.chosen ? " chosen" : "");
      item.title = "show tile " + c.tile + " on the map";
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
      item.addEventListener("click", () => selectCandidate(i, true));
      list.appendChild(item);
    });
    $("result").hidden = false;
    if (map) { showOnMap(r); }
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
    if (window.L) { initMap(); } else { $("map-caption").textContent = "The map script did not load."; }
    fetch("/api/config").then((r) => r.json()).then((c) => {
      maxBytes = c.max_bytes;
      $("max-mb").textContent = String(Math.round(maxBytes / 1048576 * 10) / 10);
    }).catch(() => {});
  });
})();
