// meshnode's page: the little it needs beyond htmx. No inline scripts (the CSP forbids them).
"use strict";
(function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  // Every htmx request carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("DOMContentLoaded", function () {
    // "Back" links go back when there is somewhere to go back to.
    document.querySelectorAll("[data-back]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        if (window.history.length > 1) {
          event.preventDefault();
          window.history.back();
        }
      });
    });
    // A live region that reloads itself when the daemon's event stream says something new.
    document.querySelectorAll("[data-live]").forEach(function (region) {
      if (!window.EventSource) return;
      var source = new EventSource(region.getAttribute("data-live"));
      var news = document.querySelector("[data-live-news]");
      source.addEventListener("notice", function () {
        // Tell screen readers once, briefly, instead of rereading the whole list.
        if (news) news.textContent = news.getAttribute("data-live-news");
        if (window.htmx) {
          window.htmx.ajax("GET", region.getAttribute("data-refresh"), { target: region, swap: "innerHTML" });
        }
      });
    });
  });
})();
