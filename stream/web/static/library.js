// The library's pages: /people (upload, delete, rename), /unknowns (name, merge, ignore, remove a face)
// and the "not this person" buttons of /events. Plain JS, no inline script (the Content-Security-Policy
// allows only scripts from /static); text is set with textContent, never as HTML. Every action calls the
// REST API (JSON errors {"error": ...} are shown next to the form); after a change the page reloads
// and shows what was done.
"use strict";
(function () {
  const FLASH = "adaface-library-message";
  const message = document.getElementById("message");

  function show(text, isError) {
    if (!message) return;
    message.textContent = text;
    message.classList.toggle("error", Boolean(isError));
    message.hidden = false;
  }

  // A message that survives the reload after a change.
  const saved = sessionStorage.getItem(FLASH);
  if (saved) {
    sessionStorage.removeItem(FLASH);
    show(saved, false);
  }

  function reloadWith(text) {
    sessionStorage.setItem(FLASH, text);
    location.reload();
  }

  function path(text) {
    return text.split("/").map(encodeURIComponent).join("/");
  }

  async function call(method, url, body) {
    const options = { method: method, credentials: "same-origin", cache: "no-store", headers: {} };
    if (body instanceof FormData) {
      options.body = body;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      return { ok: false, status: 0, data: { error: "the server cannot be reached (" + error.message + ")" } };
    }
    if (response.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = { error: "unexpected answer (HTTP " + response.status + ")" };
    }
    if (!response.ok && (!data || typeof data.error !== "string")) {
      data = { error: "HTTP " + response.status };
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function errorBox(node) {
    const card = node.closest(".card");
    return card ? card.querySelector('[data-field="error"]') : null;
  }

  function fail(node, text) {
    const box = errorBox(node);
    if (box) box.textContent = text;
    else show(text, true);
  }

  function clear(node) {
    const box = errorBox(node);
    if (box) box.textContent = "";
  }

  // Runs an action with its button disabled; returns the API's answer.
  async function busy(button, label, work) {
    const before = button ? button.textContent : "";
    if (button) {
      button.disabled = true;
      button.textContent = label;
    }
    try {
      return await work();
    } finally {
      if (button) {
        button.disabled = false;
        button.textContent = before;
      }
    }
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  // ------------------------------------------------------------------ /people

  function personOf(node) {
    const card = node.closest("[data-person]");
    return card ? card.dataset.person : null;
  }

  async function upload(form) {
    const name = personOf(form) || (form.elements.person ? form.elements.person.value.trim() : "");
    const input = form.querySelector('input[type="file"]');
    if (!name) return fail(form, "give the person a name");
    if (!input.files.length) return fail(form, "choose one or more photos");
    const body = new FormData();
    for (const file of input.files) body.append("files", file, file.name);
    const button = form.querySelector('button[type="submit"]');
    const count = input.files.length;
    const answer = await busy(button, "uploading…", function () {
      return call("POST", "/api/people/" + encodeURIComponent(name) + "/photos", body);
    });
    if (!answer.ok) return fail(form, answer.data.error);
    const added = new Set(answer.data.files);
    const photos = (answer.data.person ? answer.data.person.photos : []).filter(function (p) { return added.has(p.file); });
    const used = photos.filter(function (p) { return p.status === "used"; }).length;
    const rejected = photos.filter(function (p) { return p.status !== "used"; })
      .map(function (p) { return p.file + " (" + (p.reason || p.status) + ")"; });
    let text = plural(count, "photo") + " added to " + answer.data.person.name + ": " + used + " used";
    if (rejected.length) text += ", rejected: " + rejected.join(", ");
    reloadWith(text);
  }

  async function rename(form) {
    const old = personOf(form);
    const name = form.elements.name.value;
    const answer = await busy(form.querySelector("button"), "renaming…", function () {
      return call("POST", "/api/people/" + encodeURIComponent(old) + "/rename", { name: name });
    });
    if (!answer.ok) return fail(form, answer.data.error);
    reloadWith(old + " is now " + answer.data.person.name);
  }

  async function deletePhoto(button) {
    const person = personOf(button);
    const file = button.closest("[data-file]").dataset.file;
    if (!confirm("Delete " + file + " of " + person + "?")) return;
    const answer = await busy(button, "deleting…", function () {
      return call("DELETE", "/api/people/" + encodeURIComponent(person) + "/photos/" + path(file));
    });
    if (!answer.ok) return fail(button, answer.data.error);
    reloadWith(file + " of " + person + " deleted");
  }

  async function deletePerson(button) {
    const person = personOf(button);
    if (!confirm("Delete " + person + " and all their photos?")) return;
    const answer = await busy(button, "deleting…", function () {
      return call("DELETE", "/api/people/" + encodeURIComponent(person));
    });
    if (!answer.ok) return fail(button, answer.data.error);
    reloadWith(person + " deleted (" + plural(answer.data.files.length, "file") + ")");
  }

  // ------------------------------------------------------------------ /unknowns

  function groupOf(node) {
    return node.closest("[data-group]").dataset.group;
  }

  async function nameGroup(form) {
    const id = groupOf(form);
    const person = form.elements.person.value;
    const answer = await busy(form.querySelector("button"), "naming…", function () {
      return call("POST", "/api/unknowns/" + id + "/name", { person: person });
    });
    if (!answer.ok) return fail(form, answer.data.error);
    const d = answer.data;
    const used = d.photos.filter(function (p) { return p.status === "used"; }).length;
    reloadWith(
      "group " + d.group + " is " + d.person.name + ": " + plural(d.faces, "face") + ", " +
      plural(d.relabelled.events, "event") + " relabelled; " + plural(d.photos.length, "crop") +
      " added to the gallery, " + used + " used"
    );
  }

  async function merge(form) {
    const id = groupOf(form);
    const other = Number(form.elements.with.value);
    const answer = await busy(form.querySelector("button"), "merging…", function () {
      return call("POST", "/api/unknowns/" + id + "/merge", { with: other });
    });
    if (!answer.ok) return fail(form, answer.data.error);
    reloadWith("groups " + id + " and " + other + " merged: group " + answer.data.id + ", " + plural(answer.data.count, "face"));
  }

  async function ignore(button) {
    const id = groupOf(button);
    const answer = await busy(button, "ignoring…", function () {
      return call("POST", "/api/unknowns/" + id + "/ignore");
    });
    if (!answer.ok) return fail(button, answer.data.error);
    reloadWith("group " + id + " ignored (" + plural(answer.data.faces, "face") + ")");
  }

  async function removeFace(button) {
    const id = groupOf(button);
    const face = button.closest("[data-face]").dataset.face;
    const answer = await busy(button, "…", function () {
      return call("DELETE", "/api/unknowns/" + id + "/faces/" + face);
    });
    if (!answer.ok) return fail(button, answer.data.error);
    reloadWith("face " + face + " taken out of group " + id);
  }

  // ------------------------------------------------------------------ /events

  async function notThis(button) {
    const id = button.dataset.event;
    const person = button.dataset.person;
    if (!confirm("Event " + id + ": this is not " + person + "?")) return;
    const answer = await busy(button, "…", function () {
      return call("POST", "/api/events/" + id + "/not-this-person");
    });
    if (!answer.ok) return show("event " + id + ": " + answer.data.error, true);
    const d = answer.data;
    const row = button.closest("tr");
    const cell = row ? row.querySelector("td.person") : null;
    if (cell) cell.textContent = "unknown";
    button.replaceWith(document.createTextNode("corrected"));
    show(
      "event " + id + ": not " + d.person + "; the face of track " + d.track_id + " is kept as an example against " +
      d.person + " (" + plural(d.relabelled.events, "event") + " relabelled unknown)",
      false
    );
  }

  // ------------------------------------------------------------------ wiring

  const forms = { upload: upload, rename: rename, name: nameGroup, merge: merge };
  const buttons = {
    "delete-photo": deletePhoto,
    "delete-person": deletePerson,
    ignore: ignore,
    "remove-face": removeFace,
    "not-this": notThis,
  };

  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-action]");
    if (!form || !forms[form.dataset.action]) return;
    event.preventDefault();
    clear(form);
    forms[form.dataset.action](form).catch(function (error) { fail(form, String(error)); });
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button || !buttons[button.dataset.action]) return;
    event.preventDefault();
    clear(button);
    buttons[button.dataset.action](button).catch(function (error) { fail(button, String(error)); });
  });
})();
