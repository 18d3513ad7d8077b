// The console's only script: copy buttons, the models filter, confirmations.
// Everything works without it (the forms post, the revoke form asks for a tick).
"use strict";

function copyText(button) {
  const target = document.getElementById(button.dataset.copy);
  if (!target) return;
  const text = "value" in target ? target.value : target.textContent;
  const status = button.parentElement.querySelector(".copied");
  const done = (ok) => { if (status) status.textContent = ok ? "Copied" : "Select and copy it by hand"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => done(true), () => done(false));
    return;
  }
  // Plain http (not localhost): select the text and use the legacy copy command.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  document.body.removeChild(area);
  done(ok);
}

function filterModels(input) {
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  document.querySelectorAll("[data-group]").forEach((group) => {
    let inGroup = 0;
    group.querySelectorAll("tr[data-model]").forEach((row) => {
      const hay = row.dataset.model;
      const match = words.every((w) => hay.includes(w));
      row.hidden = !match;
      if (match) inGroup += 1;
    });
    group.hidden = inGroup === 0;
    shown += inGroup;
  });
  const none = document.getElementById("no-match");
  if (none) none.hidden = shown !== 0;
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button[data-copy]").forEach((b) => {
    b.addEventListener("click", () => copyText(b));
  });
  const filter = document.getElementById("model-filter");
  if (filter) {
    filter.addEventListener("input", () => filterModels(filter));
    filterModels(filter);
  }
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  const secret = document.getElementById("new-key");
  if (secret) secret.addEventListener("focus", () => secret.select());
});
