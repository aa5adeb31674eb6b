/* Draw the page's charts: each element with data-vl-spec holds a Vega-Lite specification
   (made on the server, gpucenter/web/charts.py) and the reader's number and date formats.
   The Vega libraries (vendored in /static/vendor/vega/, see VERSIONS.txt) are loaded only on
   pages that have a chart. Vega's expression interpreter is used instead of its compiler, so
   nothing is evaluated from strings and the Content-Security-Policy needs no 'unsafe-eval'.
   Without JavaScript the tables beside each chart carry the same numbers. */
(function () {
  "use strict";
  var charts = document.querySelectorAll("[data-vl-spec]");
  if (!charts.length) { return; }
  var base = "/static/vendor/vega/";
  var files = ["vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "vega-interpreter.js"];

  function load(index, done) {
    if (index === files.length) { done(); return; }
    var script = document.createElement("script");
    script.src = base + files[index];
    script.onload = function () { load(index + 1, done); };
    script.onerror = function () {
      charts.forEach(function (el) { el.setAttribute("data-chart-error", "load " + files[index]); });
    };
    document.head.appendChild(script);
  }

  function draw(el) {
    var spec = JSON.parse(el.getAttribute("data-vl-spec"));
    var loc = JSON.parse(el.getAttribute("data-vl-locale") || "null");
    var options = {
      renderer: "svg",
      actions: false,
      ast: true,
      expr: window.vega.expressionInterpreter,
      defaultStyle: false,
      tooltip: { disableDefaultStyle: true }
    };
    if (loc) {
      options.formatLocale = loc.number;
      options.timeFormatLocale = loc.time;
    }
    window.vegaEmbed(el, spec, options).then(function () {
      el.setAttribute("data-chart-ready", "true");
    }).catch(function (error) {
      el.setAttribute("data-chart-error", String(error && error.message || error));
    });
  }

  load(0, function () { charts.forEach(draw); });
}());
