// flask-patronlock settings page: the one enhancement. Without JavaScript the "Preview without saving" button does
// the same; with it, the banner preview follows the text as it is typed. No libraries, nothing loaded from outside.
// The character counter is rendered by the server too; here it follows the typing (the server enforces the limit).
(function () {
  "use strict";
  var text = document.querySelector("#banner-form textarea[data-max-length]");
  var counter = document.querySelector("#text-counter .pl-counter");
  if (!text || !counter) { return; }
  var max = parseInt(text.getAttribute("data-max-length"), 10);
  // the words in the page's language, from the server's catalogue (English when the template does not say)
  var words = counter.getAttribute("data-words") || "%(used)s of at most %(max)s characters";
  var over = counter.getAttribute("data-over") || " (%(over)s too many)";
  function count() {
    var used = Array.from(text.value).length;  // characters, as the server counts them (not UTF-16 units)
    counter.textContent = words.replace("%(used)s", used).replace("%(max)s", max) +
      (used > max ? over.replace("%(over)s", used - max) : "");
    counter.classList.toggle("pl-counter--over", used > max);
  }
  text.addEventListener("input", count);
  count();
}());
(function () {
  "use strict";
  var form = document.getElementById("banner-form");
  var target = document.getElementById("banner-preview");
  if (!form || !target || !window.fetch) { return; }
  var timer = null;
  function refresh() {
    var body = new FormData(form);
    fetch(form.getAttribute("data-preview-url"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": body.get("csrf_token") || "" }
    }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null) { target.innerHTML = html; }
    }).catch(function () { /* the Preview button still works */ });
  }
  form.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 250);
  });
  form.addEventListener("change", refresh);
  // text typed (or restored by the browser) before this script ran gets its preview too
  refresh();
}());
