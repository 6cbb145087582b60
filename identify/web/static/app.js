// Progressive enhancement only: every form works without this file.
"use strict";

// Upload: drag-and-drop onto the zone, a preview, and a busy note while the server identifies.
function setUpUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("image");
  const preview = document.getElementById("preview");
  const show = () => {
    const files = Array.from(input.files || []);
    if (!files.length) return;
    preview.hidden = true;  // each photo gets its own crop editor below
    setUpCroppers(files);
  };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
  form.addEventListener("submit", () => {
    document.getElementById("busy").hidden = false;
    document.getElementById("identify-button").disabled = true;
  });
}

// Crop editors: one square per chosen photo, dragged (mouse or touch) or moved with the arrow keys (Shift: resize),
// written as `crop` fields x,y,w,h (fractions of the photo as shown, upright: the browser applies EXIF orientation
// to an <img>, as the server does), one per photo in the order of the files. "Whole photo" sends a blank crop.
function setUpCroppers(files) {
  const holder = document.getElementById("croppers");
  holder.replaceChildren();
  document.getElementById("crop-hint").hidden = false;
  files.forEach((file, index) => {
    const box = document.createElement("div");
    box.className = "card";
    const label = `${file.name} (photo ${index + 1} of ${files.length})`;
    const frame = Object.assign(document.createElement("div"), { className: "cropper" });
    const image = Object.assign(document.createElement("img"), { alt: `Photo ${index + 1}: ${file.name}` });
    const square = Object.assign(document.createElement("div"), { className: "square", tabIndex: 0 });
    square.setAttribute("role", "slider");
    square.setAttribute("aria-label", `Square around the bird in ${label}`);
    const grip = Object.assign(document.createElement("div"), { className: "grip" });
    square.append(grip);
    const field = Object.assign(document.createElement("input"), { type: "hidden", name: "crop", value: "" });
    const tools = Object.assign(document.createElement("p"), { className: "crop-tools" });
    const whole = Object.assign(document.createElement("button"), { type: "button", className: "secondary",
                                                                     textContent: "Whole photo" });
    const say = Object.assign(document.createElement("span"), { className: "hint" });
    tools.append(whole, say);
    frame.append(image, square);
    box.append(frame, tools, field);
    holder.append(box);
    // The square in fractions of the photo; it starts on the middle half.
    let crop = { x: 0.25, y: 0.25, w: 0.5, h: 0.5 };
    let used = true;
    const draw = () => {
      const width = image.clientWidth, height = image.clientHeight;
      if (!width || !height) return;
      Object.assign(square.style, { left: `${crop.x * width}px`, top: `${crop.y * height}px`,
                                    width: `${crop.w * width}px`, height: `${crop.h * height}px` });
      square.hidden = !used;
      field.value = used ? [crop.x, crop.y, crop.w, crop.h].map((v) => v.toFixed(4)).join(",") : "";
      square.setAttribute("aria-valuetext", used ? `left ${Math.round(crop.x * 100)}%, top ${Math.round(crop.y * 100)}%, ` +
                          `${Math.round(crop.w * 100)}% wide` : "whole photo");
      say.textContent = used ? "" : "The whole photo will be identified.";
      whole.textContent = used ? "Whole photo" : "Draw a square";
    };
    // A square in pixels of the shown photo, kept inside it.
    const place = (left, top, side) => {
      const width = image.clientWidth, height = image.clientHeight;
      side = Math.max(24, Math.min(side, width, height));
      left = Math.max(0, Math.min(left, width - side));
      top = Math.max(0, Math.min(top, height - side));
      crop = { x: left / width, y: top / height, w: side / width, h: side / height };
      draw();
    };
    image.addEventListener("load", () => {
      const side = Math.min(image.clientWidth, image.clientHeight) / 2;
      place((image.clientWidth - side) / 2, (image.clientHeight - side) / 2, side);
    });
    window.addEventListener("resize", draw);
    whole.addEventListener("click", () => { used = !used; draw(); });
    let drag = null;
    square.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      square.setPointerCapture(event.pointerId);
      const resizing = event.target === grip;
      drag = { resizing, x: event.clientX, y: event.clientY, left: crop.x * image.clientWidth,
               top: crop.y * image.clientHeight, side: crop.w * image.clientWidth };
    });
    square.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (drag.resizing) place(drag.left, drag.top, drag.side + Math.max(dx, dy));
      else place(drag.left + dx, drag.top + dy, drag.side);
    });
    ["pointerup", "pointercancel"].forEach((type) => square.addEventListener(type, () => { drag = null; }));
    square.addEventListener("keydown", (event) => {
      const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (!steps[event.key]) return;
      event.preventDefault();
      const [dx, dy] = steps[event.key];
      const step = Math.max(2, image.clientWidth / 50);
      const left = crop.x * image.clientWidth, top = crop.y * image.clientHeight, side = crop.w * image.clientWidth;
      if (event.shiftKey) place(left, top, side + (dx + dy) * step);
      else place(left + dx * step, top + dy * step, side);
    });
    image.src = URL.createObjectURL(file);
  });
}

// "Use my location": the browser's geolocation, asked only when the observer presses the button; its accuracy is
// kept as the position's uncertainty. A position typed by hand afterwards drops that uncertainty.
function setUpLocation() {
  const button = document.getElementById("use-location");
  if (!button || !navigator.geolocation) return;
  const lat = document.getElementById("lat"), lon = document.getElementById("lon");
  const uncertainty = document.getElementById("coordinate_uncertainty_m");
  const status = document.getElementById("location-status");
  button.hidden = false;
  button.addEventListener("click", () => {
    status.textContent = "Finding your location…";
    navigator.geolocation.getCurrentPosition((position) => {
      lat.value = position.coords.latitude.toFixed(6);
      lon.value = position.coords.longitude.toFixed(6);
      uncertainty.value = Math.round(position.coords.accuracy);
      status.textContent = `Your location, within ${Math.round(position.coords.accuracy)} m.`;
    }, (error) => {
      status.textContent = `No location (${error.message}): type it, or leave it to the photo's EXIF.`;
    }, { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 });
  });
  [lat, lon].forEach((field) => field.addEventListener("input", () => { uncertainty.value = ""; status.textContent = ""; }));
}

// Review queue: j/k move between sightings, c confirm, e edit species (Enter corrects), x reject, a toggle reference.
function setUpQueue() {
  const items = Array.from(document.querySelectorAll("#queue .item"));
  if (!items.length) return;
  let current = 0;
  const select = (index) => {
    items[current].classList.remove("current");
    current = Math.max(0, Math.min(items.length - 1, index));
    items[current].classList.add("current");
    items[current].focus();
  };
  const submit = (action) => {
    const form = items[current].querySelector("form.review-form");
    const button = form.querySelector(`button[value="${action}"]`);
    if (button && !button.disabled) form.requestSubmit(button);
  };
  items.forEach((item, index) => item.addEventListener("focusin", () => {
    items[current].classList.remove("current");
    current = index;
    item.classList.add("current");
  }));
  document.querySelectorAll("form.review-form input[name=species]").forEach((field) =>
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        field.form.requestSubmit(field.form.querySelector('button[value="correct"]'));
      }
    }));
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.matches("input:not([type=checkbox]), textarea")) return;
    const actions = {
      j: () => select(current + 1),
      k: () => select(current - 1),
      c: () => submit("confirm"),
      x: () => submit("reject"),
      e: () => items[current].querySelector("input[name=species]").select(),
      a: () => items[current].querySelector("input[name=add_as_reference]").click(),
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });
  // Back from a review: the address names the next sighting (#item-<id>); start there, not at the top.
  const named = items.findIndex((item) => "#" + item.id === window.location.hash);
  select(named >= 0 ? named : 0);
}

// Review forms: as a curator types a species, offer names of the whole bird taxonomy (common and scientific,
// every authority) from /api/v1/taxa, ranked for the sighting under review (its scores, its place and season),
// then the labels already in use.
function setUpTaxonSuggestions() {
  document.querySelectorAll("input[data-suggest]").forEach((field, index) => {
    const list = document.createElement("datalist");
    list.id = `taxon-suggestions-${index}`;
    const inUse = Array.from(document.querySelectorAll(`#${field.getAttribute("list")} option`)).map((o) => o.value);
    field.after(list);
    field.setAttribute("list", list.id);
    let timer = null;
    let asked = "";
    const fill = (names) => {
      list.replaceChildren(...names.map((name) => Object.assign(document.createElement("option"), { value: name })));
    };
    fill(inUse);
    field.addEventListener("input", () => {
      clearTimeout(timer);
      const text = field.value.trim();
      if (text.length < 2 || text === asked) return;
      timer = setTimeout(async () => {
        asked = text;
        try {
          const about = field.dataset.sighting ? `&sighting=${encodeURIComponent(field.dataset.sighting)}` : "";
          const response = await fetch(`${field.dataset.suggest}?q=${encodeURIComponent(text)}&limit=12${about}`);
          if (!response.ok) return;
          const body = await response.json();
          const lower = text.toLowerCase();
          const labels = inUse.filter((name) => name.toLowerCase().includes(lower));
          const taxa = body.taxa.map((t) => t.name);
          fill([...new Set([...taxa, ...labels])]);  // the server's order: this sighting's likeliest first
        } catch (error) {
          // suggestions are a help, not a need: the form works without them
        }
      }, 150);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpUpload();
  setUpLocation();
  setUpQueue();
  setUpTaxonSuggestions();
});
