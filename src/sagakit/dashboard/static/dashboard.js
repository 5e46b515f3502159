// sagakit dashboard: live updates of the saga page, with nothing fetched from elsewhere.
//
// An element with data-events and data-fragment listens to the Server-Sent Events at
// data-events; when a "change" event carries a version other than the one it shows, it
// fetches data-fragment (server-rendered, escaped HTML) and puts it in its place. If a local
// copy of mermaid.js was configured, the flowcharts are drawn after each swap.
(function () {
  "use strict";

  function draw(root) {
    if (!window.mermaid) {
      return;
    }
    window.mermaid.run({ nodes: root.querySelectorAll("pre.mermaid") });
  }

  function follow(live) {
    var version = live.dataset.version;
    var loading = false;
    var source = new EventSource(live.dataset.events);

    function refresh(wanted) {
      if (loading) {
        return;
      }
      loading = true;
      fetch(live.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          loading = false;
          if (html === null) {
            return;
          }
          live.innerHTML = html;
          version = wanted;
          live.dataset.version = wanted;
          draw(live);
          live.dispatchEvent(new CustomEvent("sagakit:updated", { bubbles: true }));
        })
        .catch(function () {
          loading = false;
        });
    }

    source.addEventListener("change", function (message) {
      var data = JSON.parse(message.data);
      if (data.version !== version) {
        refresh(data.version);
      }
    });
    source.addEventListener("gone", function () {
      source.close();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.mermaid) {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
      draw(document);
    }
    if (window.EventSource) {
      document.querySelectorAll("[data-events][data-fragment]").forEach(follow);
    }
  });
})();
