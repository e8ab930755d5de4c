// batchd timeline: a tooltip for the bars of the server-drawn SVG. No dependencies, no build step.
// Without it the SVG <title> of each bar still shows on hover; this draws the same text in a
// styled box, at once. Listeners sit on document (event delegation), so they keep working after
// live.js swaps <main id="live">. The text is set with textContent: titles are never markup.
(function () {
  "use strict";
  var tip = null;
  var current = null;
  var hidden = null; // the <title> element whose text is lent to the box (so the native one is quiet)
  var ITEMS = "rect.bar, rect.vrun, g.marker, g.tl-phase";

  function box() {
    if (!tip) {
      tip = document.createElement("div");
      tip.className = "tl-tip";
      tip.setAttribute("role", "tooltip");
      tip.hidden = true;
      document.body.appendChild(tip);
    }
    return tip;
  }

  function titleOf(el) {
    for (var c = el.firstElementChild; c; c = c.nextElementSibling) {
      if (c.tagName.toLowerCase() === "title") return c;
    }
    return null;
  }

  function place(x, y) {
    var t = box();
    var pad = 14;
    var left = x + pad;
    var top = y + pad;
    if (left + t.offsetWidth > window.innerWidth - 4) left = Math.max(4, x - pad - t.offsetWidth);
    if (top + t.offsetHeight > window.innerHeight - 4) top = Math.max(4, y - pad - t.offsetHeight);
    t.style.left = left + window.scrollX + "px";
    t.style.top = top + window.scrollY + "px";
  }

  function show(el, x, y) {
    var title = titleOf(el);
    if (!title) return;
    hide();
    current = el;
    hidden = title;
    var text = title.textContent;
    title.setAttribute("data-text", text);
    title.textContent = "";
    var t = box();
    t.textContent = text;
    t.className = "tl-tip " + (el.getAttribute("class") || "");
    t.hidden = false;
    place(x, y);
  }

  function hide() {
    if (hidden) {
      hidden.textContent = hidden.getAttribute("data-text") || "";
      hidden.removeAttribute("data-text");
    }
    hidden = null;
    current = null;
    if (tip) tip.hidden = true;
  }

  function item(target) {
    return target && target.closest ? target.closest(ITEMS) : null;
  }

  document.addEventListener("mouseover", function (ev) {
    var el = item(ev.target);
    if (el && el !== current) show(el, ev.clientX, ev.clientY);
    else if (!el && current) hide();
  });
  document.addEventListener("mousemove", function (ev) {
    if (current) {
      if (!document.contains(current)) hide(); // swapped away by live.js
      else place(ev.clientX, ev.clientY);
    }
  });
  document.addEventListener("focusin", function (ev) {
    // Keyboard: a bar's <a> takes the focus; show its bar's text beside it.
    var el = ev.target && ev.target.querySelector ? ev.target.querySelector("rect.bar") : null;
    if (el) {
      var r = el.getBoundingClientRect();
      show(el, r.left, r.bottom);
    }
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") hide();
  });
})();
