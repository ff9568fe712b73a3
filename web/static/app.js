// Small behaviour the pages need beyond htmx: streaming answers, copy and download, loading a
// text file into the workspace, toasts, and the session-expiry warning. Served by the app
// itself (the CSP allows scripts from this origin only; nothing inline).
(function () {
  "use strict";

  function csrfToken() {
    var raw = document.body.getAttribute("hx-headers");
    if (!raw) return "";
    try { return JSON.parse(raw)["X-CSRF-Token"] || ""; } catch (e) { return ""; }
  }

  function toast(html) {
    var box = document.getElementById("toasts");
    if (!box) return;
    box.insertAdjacentHTML("beforeend", html);
    var last = box.lastElementChild;
    if (last) setTimeout(function () { if (last.parentNode) last.remove(); }, 12000);
  }

  function toastText(message) {
    var div = document.createElement("div");
    div.className = "toast toast-error";
    div.setAttribute("role", "alert");
    var p = document.createElement("p");
    p.textContent = message;
    div.appendChild(p);
    toast(div.outerHTML);
  }

  // -- toasts: dismiss buttons ----------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target instanceof Element && target.matches("[data-dismiss]")) {
      var t = target.closest(".toast");
      if (t) t.remove();
    }
  });

  // A failed htmx request that brought no toast of its own (network error, timeout).
  document.addEventListener("htmx:sendError", function () {
    toastText("The appliance did not answer. Check the connection and try again.");
  });

  // -- session-expiry warning -----------------------------------------------------------------
  var idle = parseInt(document.body.getAttribute("data-idle-timeout") || "0", 10);
  var warnTimer = null;
  var tickTimer = null;
  var lastActivity = Date.now();

  function warnAt() {
    // The server records activity at most once a minute, so warn well before the timeout.
    return Math.max(idle - Math.min(120, idle / 2), 0) * 1000;
  }

  function hideWarning() {
    var box = document.getElementById("session-warning");
    if (box) box.hidden = true;
    if (tickTimer) clearInterval(tickTimer);
  }

  function showWarning() {
    var box = document.getElementById("session-warning");
    if (!box) return;
    box.hidden = false;
    var counter = box.querySelector("[data-countdown]");
    var update = function () {
      var left = Math.max(0, Math.round((lastActivity + idle * 1000 - Date.now()) / 1000));
      if (counter) counter.textContent = left > 60 ? Math.ceil(left / 60) + " minutes" : left + " seconds";
      if (left === 0) { window.location.href = "/login"; }
    };
    update();
    tickTimer = setInterval(update, 1000);
    var button = box.querySelector("[data-keepalive]");
    if (button) button.focus();
  }

  function activity() {
    if (!idle) return;
    lastActivity = Date.now();
    hideWarning();
    if (warnTimer) clearTimeout(warnTimer);
    warnTimer = setTimeout(showWarning, warnAt());
  }

  if (idle) {
    activity();
    document.addEventListener("htmx:afterRequest", activity);
    document.addEventListener("click", function (event) {
      var target = event.target;
      if (target instanceof Element && target.matches("[data-keepalive]")) {
        fetch("/ui/status", { headers: { "HX-Request": "true" }, credentials: "same-origin" })
          .then(function (r) { if (r.redirected || r.headers.get("HX-Redirect")) { window.location.href = "/login"; } else { activity(); } });
      }
    });
  }

  // -- workspace: task parameters, schema presets, loading a file -----------------------------
  function showParams() {
    var select = document.querySelector("[data-task-select]");
    if (!select) return;
    document.querySelectorAll("[data-for-task]").forEach(function (el) {
      var on = el.getAttribute("data-for-task") === select.value;
      el.hidden = !on;
      el.querySelectorAll("input, textarea, select").forEach(function (f) { f.disabled = !on; });
    });
  }
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    if (target.matches("[data-task-select]")) showParams();
    if (target.matches("[data-schema-preset]")) {
      var option = target.selectedOptions[0];
      var schema = document.getElementById("schema");
      if (option && schema) schema.value = option.getAttribute("data-schema");
    }
    if (target.matches("[data-load-into]") && target.files && target.files[0]) {
      // Upload to the documents API (text extracted on the box, encrypted at rest, expiring
      // under the policy), then load the extracted text into the text box for the preview.
      var into = document.querySelector(target.getAttribute("data-load-into"));
      var status = document.getElementById("file-status");
      var body = new FormData();
      body.append("file", target.files[0]);
      if (status) status.textContent = "Uploading and extracting…";
      fetch("/api/v1/documents", {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() }, body: body
      }).then(function (response) {
        return response.json().then(function (doc) {
          if (!response.ok) throw new Error((doc.error && doc.error.message) || "upload failed");
          return fetch("/api/v1/documents/" + encodeURIComponent(doc.id) + "/text", { credentials: "same-origin" })
            .then(function (r) { return r.json(); })
            .then(function (t) {
              if (into) {
                into.value = t.text;
                if (window.htmx) window.htmx.trigger(into.form, "preview");
              }
              if (status) status.textContent = "Loaded " + doc.name + " (" + doc.chars + " characters); it expires " + doc.expires_at.slice(0, 16).replace("T", " ") + " UTC.";
            });
        });
      }).catch(function (error) {
        if (status) status.textContent = "";
        toastText("The document could not be loaded: " + error.message);
      });
    }
  });
  document.addEventListener("DOMContentLoaded", showParams);

  // -- workspace: send and read the answer as server-sent events ------------------------------
  var result = { text: "", json: null };

  function setResultButtons(enabled) {
    document.querySelectorAll("[data-copy='#answer'], [data-download]").forEach(function (b) {
      b.disabled = !enabled;
      if (b.getAttribute("data-download") === "json") b.hidden = !(enabled && result.json !== null);
    });
  }

  function parseEvents(buffer, onEvent) {
    var parts = buffer.split(/\r?\n\r?\n/);
    var rest = parts.pop();
    parts.forEach(function (block) {
      var name = "message";
      var data = [];
      block.split(/\r?\n/).forEach(function (line) {
        if (line.indexOf("event:") === 0) name = line.slice(6).trim();
        else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
      });
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    });
    return rest;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-stream")) return;
    event.preventDefault();
    var answer = document.querySelector(form.getAttribute("data-answer"));
    var receipt = document.querySelector(form.getAttribute("data-receipt"));
    var progress = document.getElementById("progress");
    var send = form.querySelector("button[type=submit]");
    answer.textContent = "";
    answer.setAttribute("aria-busy", "true");
    receipt.innerHTML = "";
    result = { text: "", json: null };
    setResultButtons(false);
    var progressText = document.getElementById("progress-text");
    if (progress) { progress.hidden = false; progress.removeAttribute("value"); }
    if (progressText) { progressText.hidden = true; progressText.textContent = ""; }
    if (send) send.disabled = true;
    activity();
    var finish = function () {
      answer.setAttribute("aria-busy", "false");
      if (progress) progress.hidden = true;
      if (progressText) progressText.hidden = true;
      if (send) send.disabled = false;
    };
    fetch(form.getAttribute("data-stream"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "Content-Type": "application/x-www-form-urlencoded", "Accept": "text/event-stream" },
      body: new URLSearchParams(new FormData(form)).toString()
    }).then(function (response) {
      if (!response.ok || !response.body) {
        return response.text().then(function (body) {
          var message = "The request failed (" + response.status + ").";
          try { message = JSON.parse(body).error.message || message; } catch (e) { /* not JSON */ }
          toastText(message);
        });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var onEvent = function (name, data) {
        if (name === "progress") {
          // Long work (a summary made chunk by chunk) reports how far it got.
          if (progress && data.total) { progress.max = data.total; progress.value = data.done; }
          if (progressText) {
            progressText.hidden = false;
            if (data.stage === "combining") {
              progressText.textContent = "Combining the summaries of " + data.total + " chunks…";
            } else if (data.done === 0) {
              progressText.textContent = "Summarising in " + data.total + " chunks…";
            } else {
              progressText.textContent = "Summarised chunk " + data.done + " of " + data.total + " (" + Math.round(100 * data.done / data.total) + "%)";
            }
          }
        } else if (name === "delta") {
          answer.textContent += data.content;
        } else if (name === "receipt") {
          receipt.innerHTML = data;
        } else if (name === "done") {
          result = { text: data.text, json: data.json };
          answer.textContent = data.text;
          setResultButtons(true);
        } else if (name === "error") {
          toast(data.toast);
          if (data.receipt) receipt.innerHTML = data.receipt;
        }
      };
      var pump = function () {
        return reader.read().then(function (chunk) {
          if (chunk.done) { parseEvents(buffer + "\n\n", onEvent); return; }
          buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), onEvent);
          return pump();
        });
      };
      return pump();
    }).catch(function () {
      toastText("The connection to the appliance was lost before the answer finished.");
    }).then(finish);
  });

  // -- copy and download ----------------------------------------------------------------------
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    var copy = target.closest("[data-copy]");
    if (copy) {
      var source = document.querySelector(copy.getAttribute("data-copy"));
      var text = source ? source.textContent : "";
      if (navigator.clipboard) {
        navigator.clipboard.writeText(text).then(function () {
          copy.textContent = "Copied";
          setTimeout(function () { copy.textContent = "Copy"; }, 1500);
        });
      }
      return;
    }
    var download = target.closest("[data-download]");
    if (download) {
      var asJson = download.getAttribute("data-download") === "json";
      var body = asJson ? JSON.stringify(result.json, null, 2) : result.text;
      var blob = new Blob([body], { type: asJson ? "application/json" : "text/plain" });
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = asJson ? "result.json" : "result.txt";
      document.body.appendChild(link);
      link.click();
      setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    }
  });
})();
