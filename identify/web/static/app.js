// Progressive enhancement only: every form works without this file.
"use strict";

// Upload: drag-and-drop onto the zone, a preview, and a busy note while the server identifies.
function setUpUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("image");
  const preview = document.getElementById("preview");
  const problem = document.getElementById("choose-problem");
  const most = Number(form.dataset.maxPhotos), largest = Number(form.dataset.maxBytes);
  // The server checks all of this again; the browser only saves a long upload that would be refused.
  const refusal = (files) => {
    if (files.length > most) return `Choose at most ${most} photos of one bird (you chose ${files.length}).`;
    const odd = files.find((file) => !/^image\//.test(file.type) && !/\.(jpe?g|png|webp|tiff?|heic|heif)$/i.test(file.name));
    if (odd) return `“${odd.name}” is not a photo: choose JPEG, PNG, WebP, TIFF or HEIC files.`;
    const total = files.reduce((sum, file) => sum + file.size, 0);
    if (total > largest) return `These photos are ${(total / 1e6).toFixed(1)} MB together; the most is ${(largest / 1e6).toFixed(0)} MB.`;
    return "";
  };
  const show = () => {
    const files = Array.from(input.files || []);
    if (!files.length) return;
    preview.hidden = true;  // each photo gets its own crop editor below
    problem.textContent = refusal(files);
    problem.hidden = !problem.textContent;
    document.getElementById("identify-button").disabled = !problem.hidden;
    setUpCroppers(problem.hidden ? files : []);
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

// Crop editors: one per chosen photo. No square is drawn until the user asks for one ("Mark the bird"): the
// whole photo is identified unless they do. The square is dragged (mouse or touch) or moved with the arrow keys
// (Shift: resize) and written as a `crop` field x,y,w,h (fractions of the photo as shown, upright: the browser
// applies EXIF orientation to an <img>, as the server does); a blank field means the whole photo.
function setUpCroppers(files) {
  const holder = document.getElementById("croppers");
  holder.replaceChildren();
  document.getElementById("crop-hint").hidden = false;
  files.forEach((file, index) => {
    const label = `${file.name} (photo ${index + 1} of ${files.length})`;
    const field = Object.assign(document.createElement("input"), { type: "hidden", name: "crop", value: "" });
    const box = makeCropper(URL.createObjectURL(file), `Photo ${index + 1}: ${file.name}`, label, field, null);
    box.className = "card";
    box.append(field);
    holder.append(box);
  });
}

// Re-crop in review: the same square over each photo of the sighting, starting from the crop it has.
function setUpRecrop() {
  document.querySelectorAll("form.recrop [data-crop-photo]").forEach((holder) => {
    const field = holder.querySelector("input[name=crop]");
    const parts = field.value.split(",").map(Number);
    const initial = parts.length === 4 && parts.every(Number.isFinite) ?
      { x: parts[0], y: parts[1], w: parts[2], h: parts[3] } : null;
    field.type = "hidden";
    holder.append(field);  // out of the typed field's label, which goes (CSS shows labels whatever `hidden` says)
    holder.querySelector(".typed").remove();
    holder.append(makeCropper(holder.dataset.cropPhoto, holder.dataset.alt, holder.dataset.alt, field, initial));
  });
}

// One photo with an optional square; `field` receives the square (blank: the whole photo).
function makeCropper(src, alt, label, field, initial) {
  const box = document.createElement("div");
  const frame = Object.assign(document.createElement("div"), { className: "cropper" });
  const image = Object.assign(document.createElement("img"), { alt });
  const square = Object.assign(document.createElement("div"), { className: "square", tabIndex: 0, hidden: true });
  square.setAttribute("role", "slider");
  square.setAttribute("aria-label", `Square around the bird in ${label}`);
  const grip = Object.assign(document.createElement("div"), { className: "grip" });
  square.append(grip);
  const tools = Object.assign(document.createElement("p"), { className: "crop-tools" });
  const toggle = Object.assign(document.createElement("button"), { type: "button", className: "secondary" });
  const say = Object.assign(document.createElement("span"), { className: "hint" });
  tools.append(toggle, say);
  frame.append(image, square);
  box.append(frame, tools);
  // The square in fractions of the photo; used only once the user asks for it.
  let crop = initial || { x: 0.25, y: 0.25, w: 0.5, h: 0.5 };
  let used = initial !== null;
  const draw = () => {
    const width = image.clientWidth, height = image.clientHeight;
    square.hidden = !used;
    field.value = used ? [crop.x, crop.y, crop.w, crop.h].map((v) => v.toFixed(4)).join(",") : "";
    say.textContent = used ? "Only the part inside the square will be identified." :
      "The whole photo will be identified.";
    toggle.textContent = used ? "Use the whole photo" : "Mark the bird";
    if (!width || !height) return;
    Object.assign(square.style, { left: `${crop.x * width}px`, top: `${crop.y * height}px`,
                                  width: `${crop.w * width}px`, height: `${crop.h * height}px` });
    square.setAttribute("aria-valuetext", `left ${Math.round(crop.x * 100)}%, top ${Math.round(crop.y * 100)}%, ` +
                        `${Math.round(crop.w * 100)}% wide`);
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
  const centre = () => {
    const side = Math.min(image.clientWidth, image.clientHeight) / 2;
    place((image.clientWidth - side) / 2, (image.clientHeight - side) / 2, side);
  };
  image.addEventListener("load", () => (initial ? draw() : null));
  window.addEventListener("resize", draw);
  toggle.addEventListener("click", () => {
    used = !used;
    if (used) {
      centre();
      square.focus();
    } else draw();
  });
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
  image.src = src;
  draw();
  return box;
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
  setUpRecrop();
});
