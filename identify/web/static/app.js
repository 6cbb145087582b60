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
    const file = input.files && input.files[0];
    if (!file) return;
    preview.src = URL.createObjectURL(file);
    preview.alt = "Preview of " + file.name;
    preview.hidden = false;
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
  setUpQueue();
  setUpTaxonSuggestions();
});
